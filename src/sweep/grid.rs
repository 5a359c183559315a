//! Grid expansion: the ordered cartesian product of the axes (first axis slowest, as Hydra does), each cell's
//! name from its overrides, and the stasc_config / fine_tune documents each cell runs with.
//!
//! Names are short (a model shows as its folder name), so two different values of an axis can look alike (models
//! in folders of the same name, `0.6` and `"0.6"`): those values get a short hash of the value in the name, and
//! cells that would run the same configuration are refused, so no two cells ever share a directory.

use std::path::Path;

use serde_json::Value;

use super::error::SweepError;
use super::spec::SweepSpec;
use crate::config::document::set_dotted;
use crate::config::variant::{EvolvingOrFixed, FilterLetter, FineTuning, Initialization};
use crate::config::CorrectionFilter;

/// Axis keys with a meaning beyond "set this stasc_config key".
pub const ALIASES: &[&str] = &["variant", "init", "filter", "ft", "task", "reward", "seed", "model"];

/// One cell of a sweep: its name, what it overrides, and the documents it runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Directory-safe name built from the overrides, e.g. `init=E,filter=I,ft=E,task=qa,seed=42`.
    pub name: String,
    /// The axis values of this cell, in axis order: (key, short display value).
    pub overrides: Vec<(String, String)>,
    /// The axis values of this cell as the sweep file writes them, in axis order.
    pub values: Vec<(String, Value)>,
    /// stasc_config document (base + `[set]` + task + grid overrides).
    pub stasc: Value,
    /// fine_tune document (base + `ft.*` overrides).
    pub fine_tune: Value,
}

/// Expands the grid of `spec` over base documents read from its config files.
pub fn expand(spec: &SweepSpec, base_stasc: &Value, base_ft: &Value) -> Result<Vec<Cell>, SweepError> {
    let mut combos: Vec<Vec<usize>> = vec![vec![]];
    for axis in &spec.grid {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                (0..axis.values.len()).map(move |i| {
                    let mut c = c.clone();
                    c.push(i);
                    c
                })
            })
            .collect();
    }
    let shown = axis_displays(spec, base_stasc, base_ft)?;
    let mut cells: Vec<Cell> = Vec::with_capacity(combos.len());
    for combo in combos {
        let mut stasc = base_stasc.clone();
        let mut ft = base_ft.clone();
        for (k, v) in &spec.set {
            apply(&spec.file, spec, k, v, &mut stasc, &mut ft)?;
        }
        let mut overrides = Vec::new();
        let mut values = Vec::new();
        for (a, (axis, &i)) in spec.grid.iter().zip(&combo).enumerate() {
            let value = &axis.values[i];
            apply(&spec.file, spec, &axis.key, value, &mut stasc, &mut ft)?;
            overrides.push((axis.key.clone(), shown[a][i].clone()));
            values.push((axis.key.clone(), value.clone()));
        }
        let name = if overrides.is_empty() {
            "default".to_string()
        } else {
            overrides.iter().map(|(k, v)| format!("{}={}", short_key(k), v)).collect::<Vec<_>>().join(",")
        };
        if let Some(same) = cells.iter().find(|c| c.stasc == stasc && c.fine_tune == ft) {
            return Err(crate::config::ConfigError::invalid(
                &spec.file,
                "grid",
                format!(
                    "cells {} and {name} would run the same configuration (two values of an axis mean the same); \
                     keep one of them",
                    same.name
                ),
            )
            .into());
        }
        cells.push(Cell { name, overrides, values, stasc, fine_tune: ft });
    }
    Ok(cells)
}

/// How each value of each axis shows in cell names: its short display, followed by a short hash of the value
/// where another value of the same axis has the same display.
fn axis_displays(spec: &SweepSpec, base_stasc: &Value, base_ft: &Value) -> Result<Vec<Vec<String>>, SweepError> {
    let mut all = Vec::with_capacity(spec.grid.len());
    for axis in &spec.grid {
        let mut shown = Vec::with_capacity(axis.values.len());
        for value in &axis.values {
            let (mut stasc, mut ft) = (base_stasc.clone(), base_ft.clone());
            shown.push(apply(&spec.file, spec, &axis.key, value, &mut stasc, &mut ft)?);
        }
        let alike: Vec<bool> =
            shown.iter().enumerate().map(|(i, s)| shown.iter().enumerate().any(|(j, t)| i != j && s == t)).collect();
        for ((s, value), alike) in shown.iter_mut().zip(&axis.values).zip(alike) {
            if alike {
                s.push('-');
                s.push_str(&short_hash(value));
            }
        }
        all.push(shown);
    }
    Ok(all)
}

/// The first 8 hex digits of the SHA-256 of a value's JSON text.
fn short_hash(value: &Value) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

fn short_key(key: &str) -> &str {
    key.strip_prefix("ft.training.").or_else(|| key.strip_prefix("ft.")).unwrap_or(key)
}

fn bad(file: &Path, key: &str, value: &Value, reason: &str) -> SweepError {
    crate::config::ConfigError::invalid(file, key, format!("has the grid value {value}, which is not valid: {reason}"))
        .into()
}

/// A one-letter string, as variant names spell each choice.
fn one_letter(value: &Value) -> Option<char> {
    value.as_str().filter(|s| s.chars().count() == 1).and_then(|s| s.chars().next())
}

/// An E/F choice written as its letter or as a boolean (true: evolving).
fn evolving_or_fixed<T: EvolvingOrFixed>(value: &Value) -> Option<T> {
    match value {
        Value::Bool(evolving) => Some(T::evolving(*evolving)),
        other => one_letter(other).and_then(T::from_letter),
    }
}

/// Applies one override to the documents and returns how the cell name shows it.
fn apply(
    file: &Path,
    spec: &SweepSpec,
    key: &str,
    value: &Value,
    stasc: &mut Value,
    ft: &mut Value,
) -> Result<String, SweepError> {
    match key {
        "variant" => {
            let s = value
                .as_str()
                .filter(|s| s.len() == 3)
                .ok_or_else(|| bad(file, key, value, "expected a three-letter variant such as \"EIE\""))?;
            let b: Vec<Value> = s.chars().map(|c| Value::String(c.to_string())).collect();
            apply(file, spec, "init", &b[0], stasc, ft)?;
            apply(file, spec, "filter", &b[1], stasc, ft)?;
            apply(file, spec, "ft", &b[2], stasc, ft)?;
            Ok(s.to_string())
        }
        "init" => {
            let init: Initialization = evolving_or_fixed(value)
                .ok_or_else(|| bad(file, key, value, "expected \"E\" (evolving) or \"F\" (fixed)"))?;
            set_dotted(stasc, "initial_answer_with_new_model", Value::Bool(init.new_model()));
            Ok(init.letter().to_string())
        }
        "ft" => {
            let fine_tuning: FineTuning = evolving_or_fixed(value)
                .ok_or_else(|| bad(file, key, value, "expected \"E\" (from M_n) or \"F\" (from M0)"))?;
            set_dotted(stasc, "train_from_initial_model", Value::Bool(fine_tuning.initial_model()));
            Ok(fine_tuning.letter().to_string())
        }
        "filter" => {
            // The letters choose only_better_correction, and the protocol decides what N keeps; a filter name
            // chooses that filter whatever the protocol (and is shown by name, except correct_to_correct: C).
            let by_letter = one_letter(value).and_then(FilterLetter::from_letter);
            let by_name = value.as_str().and_then(|name| name.parse::<CorrectionFilter>().ok());
            let (better, name, shown) = match (by_letter, by_name) {
                (Some(l), _) => {
                    let (better, name) = l.settings();
                    (better, name, l.letter().to_string())
                }
                (None, Some(CorrectionFilter::CorrectToCorrect)) => {
                    let (better, name) = FilterLetter::CorrectToCorrect.settings();
                    (better, name, FilterLetter::CorrectToCorrect.letter().to_string())
                }
                (None, Some(filter)) => (filter == CorrectionFilter::Improving, Some(filter), filter.to_string()),
                (None, None) => {
                    return Err(bad(
                        file,
                        key,
                        value,
                        "expected \"I\", \"N\" (the protocol's N filter), \"improving\", \"non_decreasing\" or \"correct_to_correct\" (\"C\")",
                    ))
                }
            };
            set_dotted(stasc, "only_better_correction", Value::Bool(better));
            match name {
                Some(name) => set_dotted(stasc, "filter", Value::String(name.to_string())),
                None => {
                    if let Some(doc) = stasc.as_object_mut() {
                        doc.remove("filter");
                    }
                }
            }
            Ok(shown)
        }
        "task" => {
            let name = value.as_str().ok_or_else(|| bad(file, key, value, "expected a task name"))?;
            match spec.tasks.iter().find(|(t, _)| t == name) {
                Some((_, overrides)) => {
                    for (k, v) in overrides {
                        apply(file, spec, k, v, stasc, ft)?;
                    }
                }
                None if name == "qa" || name == "math" => set_dotted(stasc, "task_type", value.clone()),
                None => {
                    let known: Vec<&str> = spec.tasks.iter().map(|(t, _)| t.as_str()).collect();
                    return Err(bad(
                        file,
                        key,
                        value,
                        &format!("no [tasks.{name}] table (tasks defined: {})", known.join(", ")),
                    ));
                }
            }
            Ok(sanitize(name))
        }
        "reward" => {
            let name = value.as_str().ok_or_else(|| bad(file, key, value, "expected a reward name"))?;
            set_dotted(stasc, "evaluator_function", value.clone());
            let shown = match name.strip_prefix("plugin:") {
                Some(p) => format!(
                    "plugin-{}",
                    Path::new(p).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
                ),
                None => name.to_string(),
            };
            Ok(sanitize(&shown))
        }
        "seed" => {
            if !value.is_u64() {
                return Err(bad(file, key, value, "expected a non-negative integer"));
            }
            set_dotted(stasc, "random_seed", value.clone());
            set_dotted(ft, "training.seed", value.clone());
            Ok(value.to_string())
        }
        "model" => {
            let p = value.as_str().ok_or_else(|| bad(file, key, value, "expected a model directory"))?;
            set_dotted(stasc, "model_path", value.clone());
            Ok(sanitize(
                &Path::new(p).file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| p.into()),
            ))
        }
        k if k.starts_with("ft.") => {
            set_dotted(ft, &k["ft.".len()..], value.clone());
            Ok(display(value))
        }
        k => {
            set_dotted(stasc, k, value.clone());
            Ok(display(value))
        }
    }
}

fn display(v: &Value) -> String {
    sanitize(&match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Keeps a cell name a single, portable path component.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_alphanumeric() || "._-+:".contains(c) { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(text: &str) -> SweepSpec {
        SweepSpec::parse(Path::new("s.toml"), text).unwrap()
    }

    const HEAD: &str = "[sweep]\nconfig = \"c.yaml\"\nft_config = \"f.yaml\"\n";

    #[test]
    fn product_is_ordered_first_axis_slowest() {
        let s = spec(&format!("{HEAD}[grid]\ninit = [\"E\", \"F\"]\nfilter = [\"I\", \"N\"]\n"));
        let cells = expand(&s, &json!({}), &json!({})).unwrap();
        let names: Vec<_> = cells.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["init=E,filter=I", "init=E,filter=N", "init=F,filter=I", "init=F,filter=N"]);
        assert_eq!(cells[2].stasc["initial_answer_with_new_model"], json!(false));
        // N leaves the filter to the protocol: no explicit `filter` key.
        assert_eq!(cells[1].stasc.get("filter"), None);
        assert_eq!(cells[1].stasc["only_better_correction"], json!(false));
    }

    #[test]
    fn variant_sets_all_three_flags() {
        let s = spec(&format!("{HEAD}[grid]\nvariant = [\"FNE\"]\n"));
        let c = &expand(&s, &json!({}), &json!({})).unwrap()[0];
        assert_eq!(c.name, "variant=FNE");
        assert_eq!(c.stasc["initial_answer_with_new_model"], json!(false));
        assert_eq!(c.stasc["only_better_correction"], json!(false));
        assert_eq!(c.stasc["train_from_initial_model"], json!(false));
    }

    #[test]
    fn filter_letters_defer_to_the_protocol_and_names_override_it() {
        let s = spec(&format!(
            "{HEAD}[set]\nprotocol = \"paper\"\n[grid]\nfilter = [\"N\", \"non_decreasing\", \"correct_to_correct\"]\n"
        ));
        let cells = expand(&s, &json!({"filter": "improving"}), &json!({})).unwrap();
        let names: Vec<_> = cells.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["filter=N", "filter=non_decreasing", "filter=C"]);
        assert_eq!(cells[0].stasc["protocol"], json!("paper"));
        assert_eq!(cells[0].stasc.get("filter"), None);
        assert_eq!(cells[1].stasc["filter"], json!("non_decreasing"));
        assert_eq!(cells[2].stasc["filter"], json!("correct_to_correct"));
    }

    #[test]
    fn tasks_seed_and_ft_overrides_reach_both_documents() {
        let s = spec(&format!(
            "{HEAD}[set]\nnum_star_iterations = 1\n[grid]\ntask = [\"qa\", \"math\"]\nseed = [1]\nft.training.learning_rate = [1e-5]\n[tasks.qa]\ndata_path = \"d/qa\"\n[tasks.math]\ndata_path = \"d/m\"\ntask_type = \"math\"\n"
        ));
        let cells = expand(&s, &json!({"temperature": 0.6}), &json!({"training": {"seed": 0}})).unwrap();
        assert_eq!(cells[1].name, "task=math,seed=1,learning_rate=0.00001");
        assert_eq!(cells[1].stasc["data_path"], json!("d/m"));
        assert_eq!(cells[1].stasc["num_star_iterations"], json!(1));
        assert_eq!(cells[1].stasc["random_seed"], json!(1));
        assert_eq!(cells[1].fine_tune["training"]["seed"], json!(1));
        assert_eq!(cells[1].fine_tune["training"]["learning_rate"], json!(1e-5));
        assert_eq!(cells[0].stasc["temperature"], json!(0.6));
    }

    #[test]
    fn bad_alias_values_are_named() {
        let s = spec(&format!("{HEAD}[grid]\nfilter = [\"X\"]\n"));
        let err = expand(&s, &json!({}), &json!({})).unwrap_err().to_string();
        assert!(err.contains("s.toml") && err.contains("'filter'") && err.contains("\"X\""), "{err}");
        let s = spec(&format!("{HEAD}[grid]\ntask = [\"nlp\"]\n[tasks.qa]\ndata_path = \"x\"\n"));
        let err = expand(&s, &json!({}), &json!({})).unwrap_err().to_string();
        assert!(err.contains("no [tasks.nlp] table"), "{err}");
    }

    #[test]
    fn plugin_rewards_get_short_names() {
        let s = spec(&format!("{HEAD}[grid]\nreward = [\"in_acc\", \"plugin:target/release/libmy_reward.so\"]\n"));
        let cells = expand(&s, &json!({}), &json!({})).unwrap();
        assert_eq!(cells[1].name, "reward=plugin-libmy_reward");
    }

    #[test]
    fn unknown_sweep_keys_suggest() {
        let err = SweepSpec::parse(Path::new("s.toml"), "[sweep]\nconfg = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("unknown key 'sweep.confg'") && err.contains("did you mean 'config'"), "{err}");
        let err = SweepSpec::parse(Path::new("s.toml"), "[grd]\n").unwrap_err().to_string();
        assert!(err.contains("'grd'") && err.contains("'grid'"), "{err}");
        let err = SweepSpec::parse(Path::new("s.toml"), &format!("{HEAD}[grid]\ninit = []\n")).unwrap_err().to_string();
        assert!(err.contains("grid.init") && err.contains("non-empty list"), "{err}");
    }

    #[test]
    fn repeated_grid_values_are_refused_with_their_entries() {
        for (axis, shown) in [
            ("seed = [42, 7, 42]", "'grid.seed' lists the value 42 twice (entries 1 and 3)"),
            ("temperature = [0.6, 0.60]", "'grid.temperature' lists the value 0.6 twice (entries 1 and 2)"),
        ] {
            let err = SweepSpec::parse(Path::new("s.toml"), &format!("{HEAD}[grid]\n{axis}\n")).unwrap_err();
            assert_eq!(err.to_string(), format!("s.toml: key {shown}; each value must appear once"));
        }
    }

    #[test]
    fn values_that_show_alike_get_distinct_names_with_a_short_hash() {
        let s =
            spec(&format!("{HEAD}[grid]\nmodel = [\"a/qwen\", \"b/qwen\", \"c/phi\"]\ntemperature = [0.5, \"0.5\"]\n"));
        let cells = expand(&s, &json!({}), &json!({})).unwrap();
        let names: Vec<&str> = cells.iter().map(|c| c.name.as_str()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 6, "{names:?}");
        let hashed = |v: Value| format!("-{}", short_hash(&v));
        assert_eq!(
            cells[0].name,
            format!("model=qwen{},temperature=0.5{}", hashed(json!("a/qwen")), hashed(json!(0.5)))
        );
        assert_eq!(
            cells[2].name,
            format!("model=qwen{},temperature=0.5{}", hashed(json!("b/qwen")), hashed(json!(0.5)))
        );
        assert_eq!(cells[4].name, format!("model=phi,temperature=0.5{}", hashed(json!(0.5))));
        assert_ne!(hashed(json!(0.5)), hashed(json!("0.5")));
        // The cell records which value it stands for.
        assert_eq!(cells[2].values, vec![("model".to_string(), json!("b/qwen")), ("temperature".into(), json!(0.5))]);
        assert_eq!(cells[2].stasc["model_path"], json!("b/qwen"));
    }

    #[test]
    fn two_values_that_mean_the_same_are_refused() {
        let s = spec(&format!("{HEAD}[grid]\nfilter = [\"C\", \"correct_to_correct\"]\n"));
        let err = expand(&s, &json!({}), &json!({})).unwrap_err().to_string();
        assert!(err.starts_with("s.toml: key 'grid' cells filter=C-"), "{err}");
        assert!(err.contains("would run the same configuration"), "{err}");
    }
}
