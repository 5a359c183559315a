//! A plain table of strings and its renderings: CSV (for analysis), Markdown and LaTeX booktabs (for pasting into
//! a paper), and the number formats each uses. Tables hold text already formatted by their builders, so every
//! rendering of one table shows the same thing.

use super::error::ReportError;

/// Shown for a value that does not exist (a missing variant, an iteration not reached); never a made-up number.
pub const MISSING: &str = "—";

/// How numbers are written: in full for CSV files, rounded for tables meant for reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Values exactly as read (computed values rounded to 6 decimals to hide float noise); missing = empty cell.
    Full,
    /// Rounded for reading; missing = "—".
    Display,
}

impl Precision {
    /// A value read from a results file, shown with `decimals` decimals for reading.
    pub fn read(self, value: Option<f64>, decimals: usize) -> String {
        match (self, value) {
            (Precision::Full, Some(v)) => format!("{v}"),
            (Precision::Display, Some(v)) => format!("{v:.decimals$}"),
            (_, None) => self.missing(),
        }
    }

    /// A value computed by the report (a mean, a difference).
    pub fn computed(self, value: Option<f64>, decimals: usize) -> String {
        self.read(value.map(|v| if self == Precision::Full { round6(v) } else { v }), decimals)
    }

    /// A signed difference (always with a sign when shown for reading).
    pub fn difference(self, value: Option<f64>, decimals: usize) -> String {
        match (self, value) {
            (Precision::Display, Some(v)) => {
                let v = if format!("{:.decimals$}", v.abs()).trim_matches(|c| c == '0' || c == '.').is_empty() {
                    0.0
                } else {
                    v
                };
                format!("{v:+.decimals$}")
            }
            _ => self.computed(value, decimals),
        }
    }

    /// A missing value.
    pub fn missing(self) -> String {
        match self {
            Precision::Full => String::new(),
            Precision::Display => MISSING.to_string(),
        }
    }
}

/// Rounds to 6 decimals (enough for accuracies over any realistic test set, and free of binary noise).
pub fn round6(v: f64) -> f64 {
    let r = (v * 1e6).round() / 1e6;
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

/// A header row and data rows of text.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Table {
    /// Column names.
    pub headers: Vec<String>,
    /// Rows, each as long as `headers`.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names and no rows.
    pub fn new(headers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Table { headers: headers.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    /// The table as CSV text (RFC 4180 quoting).
    pub fn to_csv(&self, name: &str) -> Result<String, ReportError> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let err = |e: csv::Error| ReportError::io(name, std::io::Error::other(e.to_string()));
        w.write_record(&self.headers).map_err(err)?;
        for row in &self.rows {
            w.write_record(row).map_err(err)?;
        }
        let bytes = w.into_inner().map_err(|e| ReportError::io(name, std::io::Error::other(e.to_string())))?;
        Ok(String::from_utf8(bytes).expect("CSV of UTF-8 strings is UTF-8"))
    }

    /// The table as a GitHub-flavoured Markdown table; numeric columns are right-aligned.
    pub fn to_markdown(&self) -> String {
        let cell = |s: &str| markdown_text(s).replace('|', "\\|");
        let mut out = format!("| {} |\n|", self.headers.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | "));
        for numeric in self.numeric_columns() {
            out.push_str(if numeric { " ---: |" } else { " --- |" });
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")));
        }
        out
    }

    /// The table as a LaTeX `tabular` with booktabs rules (needs `\usepackage{booktabs}`).
    pub fn to_latex(&self) -> String {
        let spec: String = self.numeric_columns().into_iter().map(|n| if n { 'r' } else { 'l' }).collect();
        let line = |cells: &[String]| cells.iter().map(|c| latex_escape(c)).collect::<Vec<_>>().join(" & ") + " \\\\\n";
        let mut out = format!("\\begin{{tabular}}{{{spec}}}\n\\toprule\n");
        out.push_str(&line(&self.headers));
        out.push_str("\\midrule\n");
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out.push_str("\\bottomrule\n\\end{tabular}\n");
        out
    }

    /// Whether each column holds only numbers (or missing values), so it reads best right-aligned.
    pub fn numeric_columns(&self) -> Vec<bool> {
        (0..self.headers.len())
            .map(|c| {
                let mut any = false;
                let all = self.rows.iter().filter_map(|r| r.get(c)).all(|v| {
                    let v = v.trim();
                    if v.is_empty() || v == MISSING {
                        return true;
                    }
                    any = true;
                    // "0.212 [0.177, 0.250]", "0.3 ± 0.1" and a flagged difference "+0.074* [...]" are numbers.
                    let first = v.split([' ', '±']).next().unwrap_or("").trim_end_matches('*');
                    first.parse::<f64>().is_ok()
                });
                all && any
            })
            .collect()
    }
}

/// `s` as Markdown text on one line: HTML tags and entities show as typed (a run name is a user's string, and
/// Markdown renderers pass raw HTML through); a bare `&` stays as it is.
pub fn markdown_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' if chars.peek().is_some_and(|n| n.is_ascii_alphanumeric() || *n == '#') => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes LaTeX specials and writes the report's symbols (±, —, Δ, →) in math mode.
pub fn latex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            '±' => out.push_str("$\\pm$"),
            '—' => out.push_str("---"),
            'Δ' => out.push_str("$\\Delta$"),
            '→' => out.push_str("$\\to$"),
            '✗' => out.push_str("$\\times$"),
            '…' => out.push_str("\\ldots{}"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(["variant", "acc", "note"]);
        t.rows.push(vec!["EIE".into(), "0.228".into(), "a|b, \"c\"".into()]);
        t.rows.push(vec!["FN_F".into(), MISSING.into(), "50% & more".into()]);
        t
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(
            sample().to_csv("t.csv").unwrap(),
            "variant,acc,note\nEIE,0.228,\"a|b, \"\"c\"\"\"\nFN_F,—,50% & more\n"
        );
    }

    #[test]
    fn markdown_aligns_numbers_right_and_escapes_pipes() {
        let md = sample().to_markdown();
        assert_eq!(
            md,
            "| variant | acc | note |\n| --- | ---: | --- |\n| EIE | 0.228 | a\\|b, \"c\" |\n| FN_F | — | 50% & more |\n"
        );
    }

    #[test]
    fn markdown_shows_html_in_names_as_typed() {
        let t = Table {
            headers: vec!["run".into(), "acc".into()],
            rows: vec![vec!["<script>alert(1)</script> &amp; <b>x</b>".into(), "0.5".into()]],
        };
        assert_eq!(
            t.to_markdown(),
            "| run | acc |\n| --- | ---: |\n| &lt;script&gt;alert(1)&lt;/script&gt; &amp;amp; &lt;b&gt;x&lt;/b&gt; | 0.5 |\n"
        );
        assert_eq!(markdown_text("a & b\nc"), "a & b c");
    }

    #[test]
    fn latex_uses_booktabs_and_escapes() {
        let tex = sample().to_latex();
        assert!(tex.starts_with("\\begin{tabular}{lrl}\n\\toprule\nvariant & acc & note \\\\\n\\midrule\n"), "{tex}");
        assert!(tex.contains("FN\\_F & --- & 50\\% \\& more \\\\"), "{tex}");
        assert!(tex.ends_with("\\bottomrule\n\\end{tabular}\n"));
        assert_eq!(latex_escape("0.2 ± 0.1"), "0.2 $\\pm$ 0.1");
        assert_eq!(latex_escape("final ✗"), "final $\\times$");
    }

    #[test]
    fn values_with_intervals_and_flags_are_numeric() {
        let mut t = Table::new(["acc", "Δ", "note"]);
        t.rows.push(vec!["0.212 [0.177, 0.250]".into(), "+0.074* [+0.030, +0.118]".into(), "per_initial ✗".into()]);
        t.rows.push(vec!["0.3 ± 0.1 [0.2, 0.4]".into(), MISSING.into(), String::new()]);
        assert_eq!(t.numeric_columns(), [true, true, false]);
    }

    #[test]
    fn precision_formats() {
        assert_eq!(Precision::Full.read(Some(0.1), 3), "0.1");
        assert_eq!(Precision::Full.read(None, 3), "");
        assert_eq!(Precision::Display.read(Some(0.1), 3), "0.100");
        assert_eq!(Precision::Display.read(None, 3), MISSING);
        assert_eq!(Precision::Full.computed(Some(0.1 + 0.2), 3), "0.3");
        assert_eq!(Precision::Display.difference(Some(0.012), 3), "+0.012");
        assert_eq!(Precision::Display.difference(Some(-0.0001), 3), "+0.000");
        assert_eq!(Precision::Display.difference(Some(-0.02), 3), "-0.020");
    }
}
