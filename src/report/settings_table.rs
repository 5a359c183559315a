//! The settings table of the paper report: for every row of the paper table that has our runs and a published
//! row, each setting's published value, ours, and whether they match. In full for paper_settings.csv (one line per
//! row and setting, with the published value's source), and one column per compared row for reading.

use super::paper::PaperTable;
use super::settings::{Agreement, Setting, SettingRow};
use super::table::Table;

/// Marks a setting of ours that differs from the published one.
pub const DIFFERS_MARK: &str = "✗";

fn agreement_name(a: Agreement) -> &'static str {
    match a {
        Agreement::Same => "same",
        Agreement::Differs => "differs",
        Agreement::Shown => "shown only",
    }
}

/// paper_settings.csv: label, variant, setting, published, ours, agreement (same, differs, shown only), source.
pub fn settings_csv(table: &PaperTable) -> Table {
    let mut t = Table::new(["label", "variant", "setting", "published", "ours", "agreement", "source"]);
    for r in &table.rows {
        let Some(c) = &r.comparison else { continue };
        for s in &c.rows {
            t.rows.push(vec![
                r.label.clone(),
                r.variant.clone(),
                s.setting.name().into(),
                s.published.clone().unwrap_or_default(),
                s.ours.shown(),
                agreement_name(s.agreement).into(),
                s.source.clone().unwrap_or_default(),
            ]);
        }
    }
    t
}

/// The settings for reading: one line per setting (published value, then ours for each compared row, marked
/// [`DIFFERS_MARK`] where it differs), a last line saying whether each row is comparable; None when no row was
/// compared.
pub fn settings_display(table: &PaperTable) -> Option<Table> {
    let compared: Vec<_> = table.rows.iter().filter_map(|r| r.comparison.as_ref().map(|c| (r, c))).collect();
    if compared.is_empty() {
        return None;
    }
    let mut headers = vec!["setting".to_string(), "published".to_string()];
    headers.extend(compared.iter().map(|(r, _)| r.label.clone()));
    headers.push("source".into());
    let mut t = Table::new(headers);
    for setting in Setting::ALL {
        let of = |rows: &[SettingRow]| rows.iter().find(|s| s.setting == setting).cloned();
        let Some(any) = compared.iter().find_map(|(_, c)| of(&c.rows)) else { continue };
        let mut line = vec![setting.name().to_string(), any.published.clone().unwrap_or_else(|| "—".into())];
        line.extend(compared.iter().map(|(_, c)| match of(&c.rows) {
            Some(s) if s.agreement == Agreement::Differs => format!("{} {DIFFERS_MARK}", s.ours.shown()),
            Some(s) => s.ours.shown(),
            None => String::new(),
        }));
        line.push(any.source.unwrap_or_default());
        t.rows.push(line);
    }
    let mut last = vec!["comparable".to_string(), String::new()];
    last.extend(compared.iter().map(|(_, c)| {
        if !c.unknown_runs.is_empty() {
            format!("no: settings unknown ({})", c.unknown_runs.join(", "))
        } else if c.comparable() {
            "yes".into()
        } else {
            "no".into()
        }
    }));
    last.push(String::new());
    t.rows.push(last);
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::load::load_results;
    use crate::report::paper::{paper_table, DEFAULT_MODEL_LABEL};
    use crate::report::published::Published;
    use crate::report::testutil::*;

    #[test]
    fn settings_are_listed_per_compared_row() {
        let tmp = tempfile::tempdir().unwrap();
        write_paper_run(&tmp.path().join("a"), "EIE", &[0.2], true);
        write_run_as(&tmp.path().join("b"), "ENF", &[0.2], true, Some(&RunConfigFixture::stasc_defaults()), 500);
        let set = load_results(tmp.path()).unwrap();
        let t = paper_table(&set, &Published::embedded().unwrap(), DEFAULT_MODEL_LABEL).unwrap();
        let shown = settings_display(&t).unwrap();
        assert_eq!(shown.headers, ["setting", "published", "EIE", "ENF", "source"]);
        assert_eq!(column(&shown, "setting")[..6], ["model", "questions", "reward", "pairing", "filter_I", "filter_N"]);
        assert_eq!(shown.rows[3][1..4], ["all_pairs", "all_pairs", "per_initial ✗"]);
        // Each filter row applies to the variants of its letter only.
        assert_eq!(shown.rows[4][2..4], ["improving", ""]);
        assert_eq!(shown.rows[5][2..4], ["", "non_decreasing ✗"]);
        let n = shown.rows.iter().find(|r| r[0] == "iterations").unwrap();
        assert_eq!(n[1..4], ["10", "0", "0"]);
        assert_eq!(shown.rows.last().unwrap()[..4], ["comparable", "", "yes", "no"]);
        let csv = settings_csv(&t);
        let row = csv.rows.iter().find(|r| r[0] == "ENF" && r[2] == "evaluator_mode").unwrap();
        assert_eq!(row[3..6], ["default", "final", "differs"]);
        assert!(row[6].contains("To reproduce use default"), "{row:?}");
        let n = csv.rows.iter().find(|r| r[0] == "EIE" && r[2] == "iterations").unwrap();
        assert_eq!(n[5], "shown only");
    }
}
