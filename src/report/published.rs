//! The published numbers the paper table compares with: per-iteration results of each model and variant
//! (reports/reference/paper_results.csv) and the settings that produced them (reports/reference/paper_settings.csv),
//! both embedded in the binary.

use std::collections::BTreeMap;

use super::error::ReportError;
use super::settings::Setting;

/// The published per-iteration results (the authors' notebook; Phi-3 rows partly read off plots, see `source`).
pub const PUBLISHED_CSV: &str = include_str!("../../reports/reference/paper_results.csv");
/// Where [`PUBLISHED_CSV`] lives in the repository.
pub const PUBLISHED_PATH: &str = "reports/reference/paper_results.csv";
/// The settings behind the published numbers, with their sources.
pub const PUBLISHED_SETTINGS_CSV: &str = include_str!("../../reports/reference/paper_settings.csv");
/// Where [`PUBLISHED_SETTINGS_CSV`] lives in the repository.
pub const PUBLISHED_SETTINGS_PATH: &str = "reports/reference/paper_settings.csv";

/// The error of row `row` (0: the header) of the published table `source_name`.
fn published_error(source_name: &str) -> impl Fn(usize, String) -> ReportError + '_ {
    move |row, message| ReportError::Published { source_name: source_name.into(), row, message }
}

/// A CSV table being read: its reader, its header row, and the positions of the columns asked for.
type OpenTable<'a, const N: usize> = (csv::Reader<&'a [u8]>, csv::StringRecord, [usize; N]);

/// A CSV reader over `text`, its header row, and the positions of the `N` columns it must have.
fn open_table<'a, const N: usize>(
    text: &'a str,
    source_name: &str,
    columns: [&str; N],
) -> Result<OpenTable<'a, N>, ReportError> {
    let err = published_error(source_name);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| err(0, e.to_string()))?.clone();
    let mut positions = [0; N];
    for (slot, name) in positions.iter_mut().zip(columns) {
        *slot = headers.iter().position(|h| h == name).ok_or_else(|| err(0, format!("no '{name}' column")))?;
    }
    Ok((reader, headers, positions))
}

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

/// The published results and the settings that produced them.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// Every row of the results table.
    pub series: Vec<PublishedSeries>,
    /// The settings behind each model's numbers.
    pub settings: PaperSettings,
}

impl Published {
    /// The tables embedded in the binary.
    pub fn embedded() -> Result<Self, ReportError> {
        Ok(Published { settings: PaperSettings::embedded()?, ..Self::parse(PUBLISHED_CSV, PUBLISHED_PATH)? })
    }

    /// Parses a results table with columns model, variant, series, it0..itN, source (and no settings);
    /// `source_name` labels errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ReportError> {
        let err = published_error(source_name);
        let (mut reader, headers, [model, variant, series, source]) =
            open_table(text, source_name, ["model", "variant", "series", "source"])?;
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
        Ok(Published { series: out, settings: PaperSettings { models: Vec::new() } })
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

/// One published setting and where it was established.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedSetting {
    /// The value, in the form a run's setting is shown in.
    pub value: String,
    /// How the value is known (prose).
    pub source: String,
}

/// The settings behind one model's published numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedSettings {
    /// Model label, as in paper_results.csv.
    pub model: String,
    /// Each setting the table lists.
    pub values: BTreeMap<Setting, PublishedSetting>,
}

impl PublishedSettings {
    /// The published value of `setting`, if listed.
    pub fn value(&self, setting: Setting) -> Option<&str> {
        self.values.get(&setting).map(|s| s.value.as_str())
    }

    /// Number of test questions the published accuracies were measured on (`questions` = train/test).
    pub fn test_questions(&self) -> Option<usize> {
        self.value(Setting::Questions)?.split('/').nth(1)?.trim().parse().ok()
    }
}

/// The published settings of every model.
#[derive(Debug, Clone, PartialEq)]
pub struct PaperSettings {
    /// One entry per model, in file order.
    pub models: Vec<PublishedSettings>,
}

impl PaperSettings {
    /// The table embedded in the binary.
    pub fn embedded() -> Result<Self, ReportError> {
        Self::parse(PUBLISHED_SETTINGS_CSV, PUBLISHED_SETTINGS_PATH)
    }

    /// Parses a table with columns model, setting, value, source; `source_name` labels errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ReportError> {
        let err = published_error(source_name);
        let (mut reader, _, [model, setting, value, source]) =
            open_table(text, source_name, ["model", "setting", "value", "source"])?;
        let mut models: Vec<PublishedSettings> = Vec::new();
        for (r, record) in reader.records().enumerate() {
            let record = record.map_err(|e| err(r + 1, e.to_string()))?;
            let field = |i: usize| record.get(i).unwrap_or("").trim().to_string();
            let name = field(setting);
            let s = Setting::parse(&name).ok_or_else(|| {
                let known: Vec<&str> = Setting::ALL.iter().map(|s| s.name()).collect();
                err(r + 1, format!("unknown setting '{name}' (known: {})", known.join(", ")))
            })?;
            let m = field(model);
            let entry = match models.iter_mut().position(|p| p.model == m) {
                Some(i) => &mut models[i],
                None => {
                    models.push(PublishedSettings { model: m, values: BTreeMap::new() });
                    models.last_mut().expect("just pushed")
                }
            };
            let new = PublishedSetting { value: field(value), source: field(source) };
            if entry.values.insert(s, new).is_some() {
                return Err(err(r + 1, format!("setting '{name}' listed twice for {}", entry.model)));
            }
        }
        Ok(PaperSettings { models })
    }

    /// The settings of `model`, if the table lists it.
    pub fn of(&self, model: &str) -> Option<&PublishedSettings> {
        self.models.iter().find(|m| m.model == model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::paper::DEFAULT_MODEL_LABEL;

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
    fn embedded_settings_list_every_setting_for_both_models() {
        let all = PaperSettings::embedded().unwrap();
        let models: Vec<&str> = all.models.iter().map(|m| m.model.as_str()).collect();
        assert_eq!(models, ["Qwen2.5-1.5B-Instruct", "Phi-3-mini-4k-instruct"]);
        for m in &all.models {
            assert_eq!(m.values.len(), Setting::ALL.len(), "{}", m.model);
            assert!(m.values.values().all(|s| !s.source.is_empty()));
            assert_eq!(m.test_questions(), Some(500));
        }
        let q = &all.models[0];
        assert_eq!(q.value(Setting::Pairing), Some("all_pairs"));
        assert!(q.values[&Setting::FilterN].source.contains("1,969 / 12,500 = 0.1575"));
        assert!(all.models[1].values[&Setting::Pairing].source.contains("not checkable"));
    }

    #[test]
    fn unknown_setting_names_its_row() {
        let err = PaperSettings::parse("model,setting,value,source\nm,model,m,s\nm,pairs,x,s\n", "s.csv")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.csv: row 2: unknown setting 'pairs' (known: model, questions,"), "{err}");
    }
}
