//! The paper's table: test correction accuracy per iteration for each of the eight variants, ours beside the
//! published numbers (reports/reference/paper_results.csv, embedded in the binary) and their difference, each with
//! its 95% interval over questions. A row whose settings differ from the published ones
//! (reports/reference/paper_settings.csv) is "not comparable" and shows the differences instead of Δ. A variant
//! missing on either side shows "—"; nothing is filled in.

use super::aggregate::{group_by_seed, max_with_index, mean_curve};
use super::error::ReportError;
use super::load::{CellResults, ResultSet};
use super::published::{Published, PublishedSeries, PublishedSettings, PUBLISHED_PATH, PUBLISHED_SETTINGS_PATH};
use super::settings::{compare, Comparison, RunSettings};
use super::table::{Precision, Table};
use super::uncertainty::{beyond, bounds, difference_with_interval, seed_of, with_interval, Answer, QuestionMatrix};
use crate::stats::{mover_difference, newcombe, wilson, Interval};

/// The model whose published numbers `--paper` compares against unless told otherwise.
pub const DEFAULT_MODEL_LABEL: &str = "Qwen2.5-1.5B-Instruct";
/// The paper's variants, in its order.
pub const PAPER_VARIANTS: [&str; 8] = ["EIE", "EIF", "ENE", "ENF", "FIE", "FIF", "FNE", "FNF"];
/// The published series the table compares (the paper's headline).
const COMPARED_SERIES: &str = "test_correction";

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
    /// 95% interval of ours per iteration: the run's own (Wilson, from its metrics) for one run, a bootstrap over
    /// questions of the runs' mean for several; None where the runs did not record what it needs.
    pub ours_interval: Vec<Option<Interval>>,
    /// Published test correction accuracy per iteration.
    pub published: Vec<Option<f64>>,
    /// 95% interval of ours − published per iteration (see [`PaperRow::difference`]).
    pub difference_interval: Vec<Option<Interval>>,
    /// 95% interval of our best iteration (the bootstrap chooses the best iteration again in every resample).
    pub max_ours_interval: Option<Interval>,
    /// 95% interval of our best minus the published best.
    pub max_difference_interval: Option<Interval>,
    /// The published row's source, when there is one.
    pub source: Option<String>,
    /// Our settings against the published ones; None when there is nothing to compare (no run or no published row).
    pub comparison: Option<Comparison>,
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

    /// Ours minus published at iteration `i`, when both exist (whether or not the settings match).
    pub fn difference(&self, i: usize) -> Option<f64> {
        Some(self.ours.get(i).copied().flatten()? - self.published.get(i).copied().flatten()?)
    }

    /// Whether the row may show differences: our settings are the published ones (or there is nothing to compare).
    pub fn comparable(&self) -> bool {
        self.comparison.as_ref().is_none_or(Comparison::comparable)
    }

    /// Why the row is not comparable, in words ("pairing per_initial (published all_pairs); ..."); None when it is.
    pub fn not_comparable_because(&self) -> Option<String> {
        self.comparison.as_ref().filter(|c| !c.comparable()).map(|c| c.differences().join("; "))
    }
}

/// The paper table for one published model.
#[derive(Debug, Clone, PartialEq)]
pub struct PaperTable {
    /// The published model compared against.
    pub model: String,
    /// Test questions behind each published accuracy (from the published settings).
    pub published_questions: Option<usize>,
    /// Number of iteration columns (0..iterations).
    pub iterations: usize,
    /// The eight paper variants in the paper's order, then any other variant we ran.
    pub rows: Vec<PaperRow>,
}

/// Builds the paper table of `set` against `published` numbers and settings for `model`.
pub fn paper_table(set: &ResultSet, published: &Published, model: &str) -> Result<PaperTable, ReportError> {
    let models = published.models();
    if !models.contains(&model) {
        return Err(ReportError::UnknownModel { label: model.into(), known: models.join(", ") });
    }
    let settings = published.settings.of(model).ok_or_else(|| ReportError::Published {
        source_name: PUBLISHED_SETTINGS_PATH.into(),
        row: 0,
        message: format!("no settings for {model}, which {PUBLISHED_PATH} has"),
    })?;
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
            rows.push(paper_row(v, v.clone(), &[], published.find(model, v, COMPARED_SERIES), settings));
        }
        for (_, label, cells) in ours {
            // One group per variant is labelled by the variant alone; several are told apart by their axes.
            let label = if groups.iter().filter(|g| &g.0 == v).count() == 1 { v.clone() } else { label.clone() };
            rows.push(paper_row(v, label, cells, published.find(model, v, COMPARED_SERIES), settings));
        }
    }
    let last = |values: &[Option<f64>]| values.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
    let iterations = rows.iter().map(|r| last(&r.ours).max(last(&r.published))).max().unwrap_or(0);
    Ok(PaperTable { model: model.into(), published_questions: settings.test_questions(), iterations, rows })
}

/// One row: our runs' mean curve and its intervals beside the published series, and how the settings compare.
fn paper_row(
    variant: &str,
    label: String,
    cells: &[&CellResults],
    series: Option<&PublishedSeries>,
    settings: &PublishedSettings,
) -> PaperRow {
    let ours: Vec<Option<f64>> = mean_curve(cells).into_iter().map(|m| m.map(|m| m.mean)).collect();
    let published: Vec<Option<f64>> = series.map(|p| p.values.clone()).unwrap_or_default();
    let matrix = QuestionMatrix::of(cells, Answer::Correction);
    let seed = |what: String| seed_of(&format!("paper|{label}|{what}"));
    let ours_interval: Vec<Option<Interval>> = (0..ours.len())
        .map(|i| match cells {
            [one] => one.iterations.get(i).and_then(|m| m.intervals.get("test_correction_accuracy")).copied(),
            _ => matrix.as_ref().and_then(|m| m.interval(seed(format!("it{i}")), |m, q| m.at(i, q))),
        })
        .collect();
    // The published value is an independent estimate on the published number of test questions.
    let n_published = settings.test_questions();
    let published_wilson = |v: f64| n_published.and_then(|n| wilson(v, n));
    let difference_interval = (0..ours.len())
        .map(|i| {
            let (o, p) = (ours[i]?, published.get(i).copied().flatten()?);
            match cells {
                // Newcombe's interval needs a rate of 0/1 outcomes; a row shows Δ only with the published reward
                // (in_acc, binary), and otherwise shows none.
                [one] => newcombe(o, one.iterations.get(i)?.questions.test, p, n_published?),
                _ => Some(mover_difference(o, ours_interval[i]?, p, published_wilson(p)?)),
            }
        })
        .collect();
    let max_ours_interval = matrix.as_ref().and_then(|m| m.interval(seed("max".into()), QuestionMatrix::best_of_mean));
    let max_difference_interval = (|| {
        let (o, p) = (max_of(&ours)?.0, max_of(&published)?.0);
        Some(mover_difference(o, max_ours_interval?, p, published_wilson(p)?))
    })();
    let comparison = (!cells.is_empty() && series.is_some()).then(|| {
        let runs: Vec<(&str, Option<&RunSettings>)> =
            cells.iter().map(|c| (c.name.as_str(), c.settings.as_ref())).collect();
        compare(settings, variant, &runs)
    });
    PaperRow {
        label,
        variant: variant.into(),
        runs: cells.len(),
        ours,
        ours_interval,
        published,
        difference_interval,
        max_ours_interval,
        max_difference_interval,
        source: series.map(|p| p.source.clone()),
        comparison,
    }
}

impl PaperTable {
    /// Three lines per row for reading (ours with its interval, published, Δ with its interval or "not comparable"
    /// and the differences) over iterations 0..N, the maximum, and the source.
    pub fn to_table(&self) -> Table {
        let p = Precision::Display;
        let mut headers: Vec<String> = vec!["variant".into(), "series".into()];
        headers.extend((0..self.iterations).map(|i| format!("it {i}")));
        headers.extend(["max", "at it.", "source"].map(String::from));
        let mut table = Table::new(headers);
        for r in &self.rows {
            let (max_ours, max_pub) = (r.max_ours(), r.max_published());
            let at = |m: Option<(f64, usize)>| m.map(|m| m.1.to_string()).unwrap_or_else(|| p.missing());
            let ours_name = if r.runs > 1 { format!("ours (mean of {})", r.runs) } else { "ours".into() };
            let mut ours = vec![r.label.clone(), ours_name];
            let mut publ = vec![r.label.clone(), "published".into()];
            for i in 0..self.iterations {
                ours.push(with_interval(
                    r.ours.get(i).copied().flatten(),
                    r.ours_interval.get(i).copied().flatten(),
                    3,
                ));
                publ.push(p.read(r.published.get(i).copied().flatten(), 3));
            }
            ours.extend([with_interval(max_ours.map(|m| m.0), r.max_ours_interval, 3), at(max_ours), String::new()]);
            publ.extend([
                p.read(max_pub.map(|m| m.0), 3),
                at(max_pub),
                r.source.clone().unwrap_or_else(|| format!("no published results for {}", self.model)),
            ]);
            let diff = match r.not_comparable_because() {
                // No Δ numbers: the rows measure different experiments.
                Some(because) => {
                    let mut line = vec![r.label.clone(), format!("not comparable: {because}")];
                    line.resize(2 + self.iterations + 3, String::new());
                    line
                }
                None => {
                    let mut line = vec![r.label.clone(), "Δ".into()];
                    for i in 0..self.iterations {
                        line.push(difference_with_interval(
                            r.difference(i),
                            r.difference_interval.get(i).copied().flatten(),
                            3,
                        ));
                    }
                    let max_diff = max_ours.zip(max_pub).map(|(o, q)| o.0 - q.0);
                    line.extend([
                        difference_with_interval(max_diff, r.max_difference_interval, 3),
                        String::new(),
                        String::new(),
                    ]);
                    line
                }
            };
            table.rows.extend([ours, publ, diff]);
        }
        table
    }

    /// paper_table.csv: one row per row of the table and iteration (then "max"), every value in full with its
    /// interval's bounds, `beyond_95` (the difference's interval excludes 0), and whether the row is comparable.
    pub fn to_csv_table(&self) -> Table {
        let p = Precision::Full;
        let mut table = Table::new([
            "variant",
            "label",
            "runs",
            "iteration",
            "ours",
            "ours_low",
            "ours_high",
            "published",
            "difference",
            "difference_low",
            "difference_high",
            "beyond_95",
            "ours_iteration",
            "published_iteration",
            "comparable",
            "not_comparable_because",
            "source",
        ]);
        for r in &self.rows {
            let comparable = r.comparison.as_ref().map_or(String::new(), |c| c.comparable().to_string());
            let because = r.not_comparable_because().unwrap_or_default();
            let shown_difference = |d: Option<f64>, i: Option<Interval>| -> [String; 4] {
                if !r.comparable() {
                    return Default::default();
                }
                let [low, high] = bounds(i.filter(|_| d.is_some()));
                let flag = i.filter(|_| d.is_some()).map(|i| beyond(i).to_string()).unwrap_or_default();
                [p.computed(d, 6), low, high, flag]
            };
            let mut line = |iteration: String,
                            o: Option<f64>,
                            oi: Option<Interval>,
                            q: Option<f64>,
                            d: [String; 4],
                            at: [String; 2]| {
                let mut row = vec![r.variant.clone(), r.label.clone(), r.runs.to_string(), iteration, p.computed(o, 6)];
                row.extend(bounds(oi.filter(|_| o.is_some())));
                row.push(p.read(q, 6));
                row.extend(d);
                row.extend(at);
                row.extend([comparable.clone(), because.clone(), r.source.clone().unwrap_or_default()]);
                table.rows.push(row);
            };
            for i in 0..self.iterations {
                let o = r.ours.get(i).copied().flatten();
                let oi = r.ours_interval.get(i).copied().flatten();
                let q = r.published.get(i).copied().flatten();
                let d = shown_difference(r.difference(i), r.difference_interval.get(i).copied().flatten());
                line(i.to_string(), o, oi, q, d, Default::default());
            }
            let (mo, mp) = (r.max_ours(), r.max_published());
            let d = shown_difference(mo.zip(mp).map(|(o, q)| o.0 - q.0), r.max_difference_interval);
            let at = [mo.map(|m| m.1.to_string()).unwrap_or_default(), mp.map(|m| m.1.to_string()).unwrap_or_default()];
            line("max".into(), mo.map(|m| m.0), r.max_ours_interval, mp.map(|m| m.0), d, at);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::load::load_results;
    use crate::report::table::round6;
    use crate::report::testutil::*;

    fn table_of(dir: &std::path::Path, model: &str) -> PaperTable {
        paper_table(&load_results(dir).unwrap(), &Published::embedded().unwrap(), model).unwrap()
    }

    #[test]
    fn our_eie_is_compared_with_the_published_eie() {
        let tmp = tempfile::tempdir().unwrap();
        write_paper_run(tmp.path(), "EIE", &[0.124, 0.25, 0.2], true);
        let t = table_of(tmp.path(), DEFAULT_MODEL_LABEL);
        assert_eq!((t.iterations, t.published_questions), (11, Some(500)));
        let labels: Vec<&str> = t.rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, PAPER_VARIANTS);
        let eie = &t.rows[0];
        assert!(eie.comparable(), "{:?}", eie.not_comparable_because());
        assert!((eie.difference(0).unwrap() - (0.124 - 0.138)).abs() < 1e-12);
        assert!((eie.difference(1).unwrap() - (0.25 - 0.228)).abs() < 1e-12);
        assert_eq!(eie.difference(3), None);
        assert_eq!(eie.max_ours(), Some((0.25, 1)));
        assert_eq!(eie.max_published(), Some((0.23, 9)));
        // One run: its own Wilson interval, and Newcombe's interval for the difference (both on 500 questions).
        assert_eq!(eie.ours_interval[0], wilson(0.124, 500));
        assert_eq!(eie.difference_interval[1], newcombe(0.25, 500, 0.228, 500));
        assert!(eie.max_ours_interval.unwrap().contains(0.25));

        let csv = t.to_csv_table();
        assert_eq!(csv.headers[..5], ["variant", "label", "runs", "iteration", "ours"]);
        let w = wilson(0.124, 500).unwrap();
        assert_eq!(csv.rows[0][..5], ["EIE", "EIE", "1", "0", "0.124"]);
        assert_eq!(column(&csv, "ours_low")[0], format!("{}", round6(w.low)));
        assert_eq!(column(&csv, "published")[..2], ["0.138", "0.228"]);
        assert_eq!(column(&csv, "difference")[..4], ["-0.014", "0.022", "-0.016", ""]);
        assert_eq!(column(&csv, "beyond_95")[..4], ["false", "false", "false", ""]);
        assert_eq!(column(&csv, "comparable")[0], "true");
        let max = &csv.rows[11];
        assert_eq!(max[3..5], ["max", "0.25"]);
        assert_eq!(column(&csv, "ours_iteration")[11], "1");
        assert_eq!(column(&csv, "published_iteration")[11], "9");
        assert_eq!(column(&csv, "source")[0], "vis.ipynb cell 24 raw text (exact)");

        // EIF was not run: ours and differences are missing, the published numbers stay.
        let shown = t.to_table();
        assert_eq!(shown.rows[3][2..4], ["—", "—"]);
        assert_eq!(shown.rows[4][2..4], ["0.164", "0.168"]);
        assert_eq!(shown.rows[5][2], "—");
        let (o, d) = (&shown.rows[0], &shown.rows[2]);
        assert_eq!(o[2], with_interval(Some(0.124), wilson(0.124, 500), 3));
        assert!(o[2].starts_with("0.124 [0.") && d[2].starts_with("-0.014 [-0.0"), "{o:?} {d:?}");
        assert!(d[3].starts_with("+0.022 ["), "{d:?}");
    }

    #[test]
    fn a_difference_is_flagged_when_its_interval_excludes_zero() {
        // Published EIE at iteration 0: 0.138 on 500 questions.
        let far = newcombe(0.30, 500, 0.138, 500).unwrap();
        assert!(far.low > 0.11 && far.high < 0.22, "{far:?}");
        let near = newcombe(0.14, 500, 0.138, 500).unwrap();
        assert!(near.low < -0.04 && near.high > 0.04, "{near:?}");
        for (acc, flagged) in [(0.30, true), (0.14, false)] {
            let tmp = tempfile::tempdir().unwrap();
            write_paper_run(tmp.path(), "EIE", &[acc], true);
            let t = table_of(tmp.path(), DEFAULT_MODEL_LABEL);
            let d = &t.to_table().rows[2][2];
            assert_eq!(d.split(' ').next().unwrap().ends_with('*'), flagged, "{d}");
            assert_eq!(column(&t.to_csv_table(), "beyond_95")[0], flagged.to_string());
        }
    }

    #[test]
    fn stasc_defaults_are_not_comparable_and_show_no_difference() {
        let tmp = tempfile::tempdir().unwrap();
        write_run_as(&tmp.path().join("a"), "ENF", &[0.2, 0.3], true, Some(&RunConfigFixture::stasc_defaults()), 500);
        let t = table_of(tmp.path(), DEFAULT_MODEL_LABEL);
        let enf = t.rows.iter().find(|r| r.variant == "ENF").unwrap();
        assert!(!enf.comparable());
        let shown = t.to_table();
        let i = t.rows.iter().position(|r| r.variant == "ENF").unwrap() * 3;
        let line = &shown.rows[i + 2];
        assert!(
            line[1].starts_with(
                "not comparable: pairing per_initial (published all_pairs); filter non_decreasing (published \
                 correct_to_correct); correctness full_reward (published positive_reward); evaluator_mode final \
                 (published default)"
            ),
            "{line:?}"
        );
        assert!(line[2..].iter().all(String::is_empty), "{line:?}");
        // Ours keeps its numbers and intervals.
        assert!(shown.rows[i][2].starts_with("0.200 ["), "{:?}", shown.rows[i]);
        let csv = t.to_csv_table();
        let row = csv.rows.iter().find(|r| r[0] == "ENF").unwrap();
        assert_eq!(row[8..12], ["", "", "", ""]);
        assert_eq!(row[14], "false");
        assert!(row[15].starts_with("pairing per_initial (published all_pairs); "), "{row:?}");
        // A run without config.resolved.yaml: its settings are unknown.
        let bare = tempfile::tempdir().unwrap();
        write_run_as(bare.path(), "EIE", &[0.2], true, None, 500);
        let t = table_of(bare.path(), DEFAULT_MODEL_LABEL);
        let name = load_results(bare.path()).unwrap().cells[0].name.clone();
        assert_eq!(
            t.rows[0].not_comparable_because(),
            Some(format!("settings unknown ({name} has no config.resolved.yaml)"))
        );
    }

    #[test]
    fn seeds_get_a_bootstrap_interval_and_a_mover_difference() {
        let tmp = tempfile::tempdir().unwrap();
        write_paper_run(&tmp.path().join("s1"), "FNF", &[0.2, 0.25], true);
        write_paper_run(&tmp.path().join("s2"), "FNF", &[0.3, 0.25], true);
        let t = table_of(tmp.path(), DEFAULT_MODEL_LABEL);
        let fnf = t.rows.iter().find(|r| r.variant == "FNF").unwrap();
        assert_eq!((fnf.runs, fnf.ours[0]), (2, Some(0.25)));
        let i = fnf.ours_interval[0].unwrap();
        assert!(i.contains(0.25) && i.high - i.low < 0.1, "{i:?}");
        let pw = wilson(0.154, 500).unwrap();
        assert_eq!(fnf.difference_interval[0], Some(mover_difference(0.25, i, 0.154, pw)));
        assert!(fnf.difference_interval[0].is_some_and(beyond));
        assert_eq!(t.to_table().rows.iter().find(|r| r[0] == "FNF").unwrap()[1], "ours (mean of 2)");
    }

    #[test]
    fn old_runs_show_no_interval() {
        let tmp = tempfile::tempdir().unwrap();
        write_run_as(tmp.path(), "EIE", &[0.2], true, Some(&RunConfigFixture::paper()), 0);
        let t = table_of(tmp.path(), DEFAULT_MODEL_LABEL);
        // Question counts were not recorded either, so the row is not comparable.
        assert_eq!(
            t.rows[0].not_comparable_because().as_deref(),
            Some("questions unknown (not recorded) (published 500/500)")
        );
        assert_eq!((t.rows[0].ours_interval[0], t.rows[0].max_ours_interval), (None, None));
        assert_eq!(t.to_table().rows[0][2], "0.200");
    }

    #[test]
    fn variants_without_published_numbers_show_dashes() {
        let tmp = tempfile::tempdir().unwrap();
        write_run(&tmp.path().join("a"), "ECE", &[0.3], true);
        write_run(&tmp.path().join("b"), "ENF", &[0.3], true);
        let t = table_of(tmp.path(), "Phi-3-mini-4k-instruct");
        assert_eq!(t.rows.len(), 9);
        let ece = t.rows.last().unwrap();
        assert_eq!(ece.label, "ECE");
        assert!(ece.published.is_empty() && ece.source.is_none() && ece.comparison.is_none());
        let shown = t.to_table();
        let publ = &shown.rows[shown.rows.len() - 2];
        assert_eq!(publ[2], "—");
        assert_eq!(publ.last().unwrap(), "no published results for Phi-3-mini-4k-instruct");
        // Phi-3 has no ENF test_initial row, but has its test_correction.
        let enf = t.rows.iter().find(|r| r.label == "ENF").unwrap();
        assert_eq!(enf.published[0], Some(0.356));
        assert!(enf
            .not_comparable_because()
            .unwrap()
            .starts_with("model Qwen2.5-1.5B-Instruct (published Phi-3-mini-4k-instruct)"));
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
