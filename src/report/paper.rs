//! The paper's table: test correction accuracy per iteration for each of the eight variants, ours beside the
//! published numbers (reports/reference/paper_results.csv, embedded in the binary) and their difference. A variant
//! missing on either side shows "—"; nothing is filled in.

use super::aggregate::{group_by_seed, max_with_index, mean_curve};
use super::error::ReportError;
use super::load::{CellResults, ResultSet};
use super::table::{Precision, Table};

/// The published per-iteration results (the authors' notebook; Phi-3 rows partly read off plots, see `source`).
pub const PUBLISHED_CSV: &str = include_str!("../../reports/reference/paper_results.csv");
/// Where [`PUBLISHED_CSV`] lives in the repository.
pub const PUBLISHED_PATH: &str = "reports/reference/paper_results.csv";
/// The model whose published numbers `--paper` compares against unless told otherwise.
pub const DEFAULT_MODEL_LABEL: &str = "Qwen2.5-1.5B-Instruct";
/// The paper's variants, in its order.
pub const PAPER_VARIANTS: [&str; 8] = ["EIE", "EIF", "ENE", "ENF", "FIE", "FIF", "FNE", "FNF"];
/// The published series the table compares (the paper's headline).
const COMPARED_SERIES: &str = "test_correction";

/// One published series: a model, a variant, what is measured, its values per iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedSeries {
    /// Model label, e.g. "Qwen2.5-1.5B-Instruct".
    pub model: String,
    /// Three-letter variant.
    pub variant: String,
    /// test_initial, test_correction or n_filtered_train_pairs.
    pub series: String,
    /// Value per iteration (None where the source has none).
    pub values: Vec<Option<f64>>,
    /// Where the numbers were read.
    pub source: String,
}

/// The published results table.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// Every row of the table.
    pub series: Vec<PublishedSeries>,
}

impl Published {
    /// The table embedded in the binary.
    pub fn embedded() -> Result<Self, ReportError> {
        Self::parse(PUBLISHED_CSV, PUBLISHED_PATH)
    }

    /// Parses a table with columns model, variant, series, it0..itN, source; `source_name` labels errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ReportError> {
        let err =
            |row: usize, message: String| ReportError::Published { source_name: source_name.into(), row, message };
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().map_err(|e| err(0, e.to_string()))?.clone();
        let col =
            |name: &str| headers.iter().position(|h| h == name).ok_or_else(|| err(0, format!("no '{name}' column")));
        let (model, variant, series, source) = (col("model")?, col("variant")?, col("series")?, col("source")?);
        let mut iterations: Vec<(usize, usize)> = headers
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.strip_prefix("it").and_then(|n| n.parse::<usize>().ok()).map(|n| (n, i)))
            .collect();
        iterations.sort();
        if iterations.iter().enumerate().any(|(k, (n, _))| k != *n) {
            return Err(err(0, "iteration columns must be it0, it1, ... without gaps".into()));
        }
        let mut out = Vec::new();
        for (r, record) in reader.records().enumerate() {
            let record = record.map_err(|e| err(r + 1, e.to_string()))?;
            let values = iterations
                .iter()
                .map(|&(n, i)| {
                    let v = record.get(i).unwrap_or("").trim();
                    if v.is_empty() {
                        Ok(None)
                    } else {
                        v.parse::<f64>()
                            .map(Some)
                            .map_err(|_| err(r + 1, format!("column it{n}: '{v}' is not a number")))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let field = |i: usize| record.get(i).unwrap_or("").to_string();
            out.push(PublishedSeries {
                model: field(model),
                variant: field(variant),
                series: field(series),
                values,
                source: field(source),
            });
        }
        Ok(Published { series: out })
    }

    /// Model labels in table order, each once.
    pub fn models(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for s in &self.series {
            if !out.contains(&s.model.as_str()) {
                out.push(&s.model);
            }
        }
        out
    }

    /// The series of `model` and `variant` named `series`.
    pub fn find(&self, model: &str, variant: &str, series: &str) -> Option<&PublishedSeries> {
        self.series.iter().find(|s| s.model == model && s.variant == variant && s.series == series)
    }
}

/// One variant (or one group of runs of a variant) in the paper table.
#[derive(Debug, Clone, PartialEq)]
pub struct PaperRow {
    /// Variant, with the group's other axis values when several groups share a variant.
    pub label: String,
    /// Three-letter variant.
    pub variant: String,
    /// Number of our runs averaged (0: none).
    pub runs: usize,
    /// Our test correction accuracy per iteration (mean over the runs that reached it).
    pub ours: Vec<Option<f64>>,
    /// Published test correction accuracy per iteration.
    pub published: Vec<Option<f64>>,
    /// The published row's source, when there is one.
    pub source: Option<String>,
}

fn max_of(values: &[Option<f64>]) -> Option<(f64, usize)> {
    let present: Vec<(usize, f64)> = values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (i, v))).collect();
    max_with_index(present.iter().map(|p| p.1)).map(|(v, k)| (v, present[k].0))
}

impl PaperRow {
    /// Our best iteration (value, iteration).
    pub fn max_ours(&self) -> Option<(f64, usize)> {
        max_of(&self.ours)
    }

    /// The published best iteration (value, iteration).
    pub fn max_published(&self) -> Option<(f64, usize)> {
        max_of(&self.published)
    }

    /// Ours minus published at iteration `i`, when both exist.
    pub fn difference(&self, i: usize) -> Option<f64> {
        Some(self.ours.get(i).copied().flatten()? - self.published.get(i).copied().flatten()?)
    }
}

/// The paper table for one published model.
#[derive(Debug, Clone, PartialEq)]
pub struct PaperTable {
    /// The published model compared against.
    pub model: String,
    /// Number of iteration columns (0..iterations).
    pub iterations: usize,
    /// The eight paper variants in the paper's order, then any other variant we ran.
    pub rows: Vec<PaperRow>,
}

/// Builds the paper table of `set` against `published` numbers for `model`.
pub fn paper_table(set: &ResultSet, published: &Published, model: &str) -> Result<PaperTable, ReportError> {
    let models = published.models();
    if !models.contains(&model) {
        return Err(ReportError::UnknownModel { label: model.into(), known: models.join(", ") });
    }
    let groups: Vec<(String, String, Vec<&CellResults>)> = {
        let all = group_by_seed(set);
        let mut out = Vec::new();
        for g in &all {
            let cells: Vec<&CellResults> =
                g.members.iter().map(|&i| &set.cells[i]).filter(|c| !c.iterations.is_empty()).collect();
            if let (Some(variant), false) = (g.variant.clone(), cells.is_empty()) {
                out.push((variant, g.label(), cells));
            }
        }
        out
    };
    let row = |variant: &str, label: String, cells: &[&CellResults]| {
        let p = published.find(model, variant, COMPARED_SERIES);
        PaperRow {
            label,
            variant: variant.into(),
            runs: cells.len(),
            ours: mean_curve(cells).into_iter().map(|m| m.map(|m| m.mean)).collect(),
            published: p.map(|p| p.values.clone()).unwrap_or_default(),
            source: p.map(|p| p.source.clone()),
        }
    };
    let mut rows = Vec::new();
    let mut variants: Vec<String> = PAPER_VARIANTS.iter().map(|v| v.to_string()).collect();
    for (v, _, _) in &groups {
        if !variants.contains(v) {
            variants.push(v.clone());
        }
    }
    for v in &variants {
        let ours: Vec<&(String, String, Vec<&CellResults>)> = groups.iter().filter(|g| &g.0 == v).collect();
        if ours.is_empty() {
            rows.push(row(v, v.clone(), &[]));
        }
        for (_, label, cells) in ours {
            // One group per variant is labelled by the variant alone; several are told apart by their axes.
            let label = if groups.iter().filter(|g| &g.0 == v).count() == 1 { v.clone() } else { label.clone() };
            rows.push(row(v, label, cells));
        }
    }
    let last = |values: &[Option<f64>]| values.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
    let iterations = rows.iter().map(|r| last(&r.ours).max(last(&r.published))).max().unwrap_or(0);
    Ok(PaperTable { model: model.into(), iterations, rows })
}

impl PaperTable {
    /// Three lines per row (ours, published, difference) over iterations 0..N, the maximum, and the source.
    pub fn to_table(&self, p: Precision) -> Table {
        let mut headers: Vec<String> = vec!["variant".into(), "series".into()];
        if p == Precision::Full {
            headers.push("runs".into());
        }
        headers.extend((0..self.iterations).map(|i| {
            if p == Precision::Full {
                format!("it{i}")
            } else {
                format!("it {i}")
            }
        }));
        headers.extend(
            match p {
                Precision::Full => ["max", "max_iteration", "source"],
                Precision::Display => ["max", "at it.", "source"],
            }
            .map(String::from),
        );
        let mut table = Table::new(headers);
        for r in &self.rows {
            let (max_ours, max_pub) = (r.max_ours(), r.max_published());
            let at = |m: Option<(f64, usize)>| m.map(|m| m.1.to_string()).unwrap_or_else(|| p.missing());
            let ours_name = match (p, r.runs) {
                (Precision::Display, n) if n > 1 => format!("ours (mean of {n})"),
                _ => "ours".into(),
            };
            let mut ours = vec![r.label.clone(), ours_name];
            let mut publ = vec![r.label.clone(), "published".into()];
            let mut diff = vec![r.label.clone(), if p == Precision::Full { "difference" } else { "Δ" }.into()];
            if p == Precision::Full {
                ours.push(r.runs.to_string());
                publ.push(String::new());
                diff.push(String::new());
            }
            for i in 0..self.iterations {
                ours.push(p.computed(r.ours.get(i).copied().flatten(), 3));
                publ.push(p.read(r.published.get(i).copied().flatten(), 3));
                diff.push(p.difference(r.difference(i), 3));
            }
            ours.extend([p.computed(max_ours.map(|m| m.0), 3), at(max_ours), String::new()]);
            publ.extend([
                p.read(max_pub.map(|m| m.0), 3),
                at(max_pub),
                r.source.clone().unwrap_or_else(|| format!("no published results for {}", self.model)),
            ]);
            let max_diff = max_ours.zip(max_pub).map(|(o, q)| o.0 - q.0);
            diff.extend([p.difference(max_diff, 3), String::new(), String::new()]);
            table.rows.extend([ours, publ, diff]);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::load::load_results;
    use crate::report::testutil::*;

    #[test]
    fn embedded_table_parses_with_both_models() {
        let p = Published::embedded().unwrap();
        assert_eq!(p.models(), vec!["Qwen2.5-1.5B-Instruct", "Phi-3-mini-4k-instruct"]);
        let eie = p.find(DEFAULT_MODEL_LABEL, "EIE", "test_correction").unwrap();
        assert_eq!(eie.values.len(), 11);
        assert_eq!(eie.values[0], Some(0.138));
        assert_eq!(eie.values[1], Some(0.228));
        let fie = p.find(DEFAULT_MODEL_LABEL, "FIE", "test_correction").unwrap();
        assert_eq!(fie.values[10], None);
    }

    #[test]
    fn bad_published_value_names_row_and_column() {
        let err = Published::parse("model,variant,series,it0,it1,source\nm,EIE,test_correction,0.1,x,s\n", "p.csv")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "p.csv: row 1: column it1: 'x' is not a number");
    }

    #[test]
    fn our_eie_is_compared_with_the_published_eie() {
        let tmp = tempfile::tempdir().unwrap();
        write_run(tmp.path(), "EIE", &[0.125, 0.25, 0.2], true);
        let set = load_results(tmp.path()).unwrap();
        let t = paper_table(&set, &Published::embedded().unwrap(), DEFAULT_MODEL_LABEL).unwrap();
        assert_eq!(t.iterations, 11);
        let labels: Vec<&str> = t.rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, PAPER_VARIANTS);
        let eie = &t.rows[0];
        assert!((eie.difference(0).unwrap() - (0.125 - 0.138)).abs() < 1e-12);
        assert!((eie.difference(1).unwrap() - (0.25 - 0.228)).abs() < 1e-12);
        assert_eq!(eie.difference(3), None);
        assert_eq!(eie.max_ours(), Some((0.25, 1)));
        assert_eq!(eie.max_published(), Some((0.23, 9)));
        let csv = t.to_table(Precision::Full);
        assert_eq!(csv.headers[..4], ["variant", "series", "runs", "it0"]);
        assert_eq!(csv.rows[0][..6], ["EIE", "ours", "1", "0.125", "0.25", "0.2"]);
        assert_eq!(csv.rows[0][6], "");
        assert_eq!(csv.rows[1][3..5], ["0.138", "0.228"]);
        assert_eq!(csv.rows[2][3..6], ["-0.013", "0.022", "-0.016"]);
        let last = csv.headers.len() - 1;
        assert_eq!(csv.rows[2][last - 2], "0.02");
        assert_eq!(csv.rows[1][last], "vis.ipynb cell 24 raw text (exact)");
        // EIF was not run: ours and differences are missing, the published numbers stay.
        let shown = t.to_table(Precision::Display);
        assert_eq!(shown.rows[3][2..4], ["—", "—"]);
        assert_eq!(shown.rows[4][2..4], ["0.164", "0.168"]);
        assert_eq!(shown.rows[5][2], "—");
        assert_eq!(shown.rows[2][2..4], ["-0.013", "+0.022"]);
    }

    #[test]
    fn variants_without_published_numbers_show_dashes() {
        let tmp = tempfile::tempdir().unwrap();
        write_run(&tmp.path().join("a"), "ECE", &[0.3], true);
        write_run(&tmp.path().join("b"), "ENF", &[0.3], true);
        let set = load_results(tmp.path()).unwrap();
        let t = paper_table(&set, &Published::embedded().unwrap(), "Phi-3-mini-4k-instruct").unwrap();
        assert_eq!(t.rows.len(), 9);
        let ece = t.rows.last().unwrap();
        assert_eq!(ece.label, "ECE");
        assert!(ece.published.is_empty() && ece.source.is_none());
        let shown = t.to_table(Precision::Display);
        let publ = &shown.rows[shown.rows.len() - 2];
        assert_eq!(publ[2], "—");
        assert_eq!(publ.last().unwrap(), "no published results for Phi-3-mini-4k-instruct");
        // Phi-3 has no ENF test_initial row, but has its test_correction.
        let enf = t.rows.iter().find(|r| r.label == "ENF").unwrap();
        assert_eq!(enf.published[0], Some(0.356));
    }

    #[test]
    fn unknown_model_lists_the_known_ones() {
        let tmp = tempfile::tempdir().unwrap();
        write_run(tmp.path(), "EIE", &[0.1], true);
        let set = load_results(tmp.path()).unwrap();
        let err = paper_table(&set, &Published::embedded().unwrap(), "Qwen").unwrap_err().to_string();
        assert_eq!(err, "--model-label 'Qwen': no published results for this model (known: Qwen2.5-1.5B-Instruct, Phi-3-mini-4k-instruct)");
    }
}
