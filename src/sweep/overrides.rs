//! Command-line overrides of a sweep (`stasc sweep FILE key=value`): the grid's cells with the overrides applied
//! last, so the command line wins over the base files, `[set]`, `[tasks.*]` and the grid, as in Hydra. A key the
//! grid varies cannot be overridden: every cell would get the same value under different names.

use serde_json::Value;

use super::error::SweepError;
use super::grid::{expand, Cell};
use super::spec::SweepSpec;
use crate::config::document::load_yaml;
use crate::config::fine_tune::FINE_TUNE_KEYS;
use crate::config::keys::lookup;
use crate::config::overrides::{apply, Target};
use crate::config::stasc_config::STASC_KEYS;
use crate::config::ConfigError;

/// Reads the base files of `spec`, expands its grid and applies its command-line overrides to every cell.
pub fn cells(spec: &SweepSpec) -> Result<Vec<Cell>, SweepError> {
    // The base files get the same checks (and one-line errors naming them) as in `stasc run`.
    let base_stasc = load_yaml(&spec.config, STASC_KEYS)?;
    let base_ft = load_yaml(&spec.ft_config, FINE_TUNE_KEYS)?;
    let mut cells = expand(spec, &base_stasc, &base_ft)?;
    for o in &spec.overrides {
        let document = |cell: &Cell| match o.target {
            Target::StascConfig => lookup(&cell.stasc, &o.key).cloned(),
            Target::FineTune => lookup(&cell.fine_tune, &o.key).cloned(),
        };
        let mut seen: Vec<Option<Value>> = Vec::new();
        for cell in &cells {
            let value = document(cell);
            if !seen.contains(&value) {
                seen.push(value);
            }
        }
        if seen.len() > 1 {
            let shown: Vec<String> =
                seen.iter().take(3).map(|v| v.as_ref().map_or("unset".to_string(), ToString::to_string)).collect();
            return Err(ConfigError::Override {
                arg: o.text.clone(),
                reason: format!(
                    "the grid of {} gives this key different values ({}); overriding it would make those cells \
                     identical: change the grid instead",
                    spec.file.display(),
                    shown.join(", ")
                ),
            }
            .into());
        }
    }
    for cell in &mut cells {
        apply(&spec.overrides, Target::StascConfig, &mut cell.stasc);
        apply(&spec.overrides, Target::FineTune, &mut cell.fine_tune);
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::overrides::parse;
    use serde_json::json;

    fn spec(dir: &Path, grid: &str, overrides: &[&str]) -> SweepSpec {
        std::fs::write(dir.join("c.yaml"), "model_path: m\ndata_path: d\ntemperature: 0.6\n").unwrap();
        std::fs::write(dir.join("f.yaml"), "training:\n  learning_rate: 1.0e-5\n").unwrap();
        let text = format!(
            "[sweep]\nconfig = \"{0}/c.yaml\"\nft_config = \"{0}/f.yaml\"\n[set]\nnum_star_iterations = 3\n[grid]\n{grid}\n",
            dir.display()
        );
        let mut spec = SweepSpec::parse(&dir.join("s.toml"), &text).unwrap();
        spec.overrides = parse(&overrides.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        spec
    }

    #[test]
    fn overrides_win_over_files_set_and_grid_in_every_cell() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(
            dir.path(),
            "variant = [\"EIE\", \"FNF\"]\nseed = [1]",
            &["num_star_iterations=1", "temperature=0.8", "ft.training.learning_rate=2e-5", "ft.training.seed=7"],
        );
        let cells = cells(&s).unwrap();
        assert_eq!(cells.len(), 2);
        for cell in &cells {
            assert_eq!(cell.stasc["num_star_iterations"], json!(1));
            assert_eq!(cell.stasc["temperature"], json!(0.8));
            assert_eq!(cell.fine_tune["training"]["learning_rate"], json!(2e-5));
            // A one-value axis sets ft.training.seed in every cell; the command line still wins.
            assert_eq!(cell.fine_tune["training"]["seed"], json!(7));
        }
        assert_eq!(cells[0].name, "variant=EIE,seed=1");
    }

    #[test]
    fn a_key_the_grid_varies_cannot_be_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), "variant = [\"EIE\", \"FNF\"]", &["initial_answer_with_new_model=true"]);
        let e = cells(&s).unwrap_err().to_string();
        assert!(
            e.starts_with("command-line override 'initial_answer_with_new_model=true': the grid of ")
                && e.contains("gives this key different values (true, false)"),
            "{e}"
        );
    }
}
