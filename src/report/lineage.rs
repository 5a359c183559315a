//! The lineage page of one run (`lineage/<run>.html`): every question across iterations, with its initial answers,
//! corrections, rewards, transitions and what the filter did, read from the run's `iter_<n>/samples.jsonl`. The
//! data goes into the page as JSON and a small script (templates/report/lineage.html) renders and filters it in the
//! browser: by split, transition (I→C, C→I, ...), filter decision, iteration and text.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::error::ReportError;
use super::load::CellResults;

/// The page's script and styles; `/*LINEAGE_DATA*/` is replaced by the run's data.
const TEMPLATE: &str = include_str!("../../templates/report/lineage.html");
const DATA_MARK: &str = "/*LINEAGE_DATA*/null";

/// Sample lines a page holds at most: above it, train questions are left out (test questions always stay), so a
/// paper-scale run (500 train questions × 25 pairs × 11 iterations) still gives a page a browser opens.
pub const MAX_LINES: usize = 20_000;

/// One question across the run's iterations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineageQuestion {
    /// "train" or "test".
    pub split: String,
    /// Question id.
    pub id: String,
    /// Question text.
    pub question: String,
    /// Gold answers.
    pub gold: Vec<String>,
    /// Its samples.jsonl lines, each with `iteration` added, in iteration order.
    pub rows: Vec<Value>,
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineageData {
    /// Run name.
    pub run: String,
    /// Run directory.
    pub dir: String,
    /// Iterations that have samples.jsonl.
    pub iterations: Vec<usize>,
    /// Questions, test first, in id order within a split.
    pub questions: Vec<LineageQuestion>,
    /// What was left out and why (old runs without samples.jsonl, train questions over [`MAX_LINES`]).
    pub notes: Vec<String>,
}

/// Reads the lineage of `cell` from its samples.jsonl files; None when no iteration has one.
pub fn lineage_data(cell: &CellResults) -> Result<Option<LineageData>, ReportError> {
    let mut notes = Vec::new();
    let mut iterations = Vec::new();
    let mut by_question: BTreeMap<(u8, String), LineageQuestion> = BTreeMap::new();
    let mut lines = 0usize;
    for m in &cell.iterations {
        let n = m.iteration;
        let path = cell.dir.join(format!("iter_{n}")).join("samples.jsonl");
        if !path.is_file() {
            notes.push(format!("iteration {n} has no samples.jsonl (the run was made before stasc wrote it)"));
            continue;
        }
        iterations.push(n);
        let text = fs::read_to_string(&path).map_err(|e| ReportError::io(&path, e))?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad =
                |what: &str| ReportError::Samples { path: path.clone(), message: format!("line {}: {what}", i + 1) };
            let mut row: Value = serde_json::from_str(line).map_err(|e| bad(&format!("not valid JSON ({e})")))?;
            let (Some(split), Some(id)) = (row["split"].as_str(), row["id"].as_str()) else {
                return Err(bad("expected \"split\" and \"id\" (a samples.jsonl line)"));
            };
            let (split, id) = (split.to_string(), id.to_string());
            let question = row["question"].as_str().unwrap_or_default().to_string();
            let gold: Vec<String> = row["gold"]
                .as_array()
                .map(|a| a.iter().filter_map(|g| g.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            if let Some(o) = row.as_object_mut() {
                // The question's own fields are shown once per question, not once per row.
                for k in ["split", "id", "question", "gold"] {
                    o.remove(k);
                }
                o.insert("iteration".into(), n.into());
            }
            let order = if split == "test" { 0 } else { 1 };
            by_question
                .entry((order, id.clone()))
                .or_insert_with(|| LineageQuestion { split, id, question, gold, rows: Vec::new() })
                .rows
                .push(row);
            lines += 1;
        }
    }
    if iterations.is_empty() {
        return Ok(None);
    }
    let mut questions: Vec<LineageQuestion> = by_question.into_values().collect();
    if lines > MAX_LINES {
        let before = questions.len();
        questions.retain(|q| q.split == "test");
        notes.push(format!(
            "{} train questions left out: the run has {lines} sample lines, more than a page holds ({MAX_LINES}); \
             every line is in iter_<n>/samples.jsonl",
            before - questions.len()
        ));
    }
    Ok(Some(LineageData { run: cell.name.clone(), dir: cell.dir.display().to_string(), iterations, questions, notes }))
}

/// The page for `data`: the template with the data as JSON (`<` escaped, so no text can close the script element).
pub fn render(data: &LineageData) -> Result<String, ReportError> {
    let json = serde_json::to_string(data).map_err(|e| ReportError::Samples {
        path: data.dir.clone().into(),
        message: format!("cannot serialise: {e}"),
    })?;
    let json = json.replace('<', "\\u003c");
    Ok(TEMPLATE.replacen(DATA_MARK, &json, 1))
}

/// The page's file name for a run: its name with anything but letters, digits, `-`, `_`, `.`, `=` and `,` as `_`.
pub fn file_name(run: &str) -> String {
    let safe: String =
        run.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.=,".contains(c) { c } else { '_' }).collect();
    format!("{safe}.html")
}

/// Writes `lineage/<run>.html` under `out` for every run that has samples.jsonl; returns (run index, page path
/// relative to `out`) for the links in index.html.
pub fn write_pages(
    cells: &[CellResults],
    out: &Path,
    write: &mut dyn FnMut(&str, &str) -> Result<(), ReportError>,
) -> Result<Vec<Option<String>>, ReportError> {
    let mut links = Vec::new();
    let dir = out.join("lineage");
    for cell in cells {
        let Some(data) = lineage_data(cell)? else {
            links.push(None);
            continue;
        };
        fs::create_dir_all(&dir).map_err(|e| ReportError::io(&dir, e))?;
        let relative = format!("lineage/{}", file_name(&cell.name));
        write(&relative, &render(&data)?)?;
        links.push(Some(relative));
    }
    Ok(links)
}
