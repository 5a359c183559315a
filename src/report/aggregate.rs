//! Aggregation over what runs reported: the best iteration of a run, and mean ± standard deviation over runs that
//! differ only by their seed (the same variant, axes and experiment settings). Never recomputes a per-iteration
//! metric.

use super::load::{CellResults, ResultSet};

/// Axis keys that only choose a random seed: `seed`, or any key whose last dotted part ends in `seed`
/// (`random_seed`, `ft.training.seed`).
pub fn is_seed_axis(key: &str) -> bool {
    key.rsplit('.').next().is_some_and(|last| last.ends_with("seed"))
}

/// Axis keys that only restate the variant (its letters are shown in the variant column).
pub fn is_variant_axis(key: &str) -> bool {
    matches!(key, "variant" | "init" | "filter" | "ft")
}

/// The largest value and the first index where it occurs (ties go to the earliest iteration).
pub fn max_with_index(values: impl IntoIterator<Item = f64>) -> Option<(f64, usize)> {
    values.into_iter().enumerate().fold(None, |best, (i, v)| match best {
        Some((b, _)) if v <= b => best,
        _ => Some((v, i)),
    })
}

/// Test correction accuracy per iteration of a run.
pub fn test_correction_curve(cell: &CellResults) -> Vec<f64> {
    cell.iterations.iter().map(|m| m.test_correction_accuracy).collect()
}

/// Mean and sample standard deviation of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanStd {
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator); None for a single value.
    pub std: Option<f64>,
    /// Number of values.
    pub n: usize,
}

impl MeanStd {
    /// Mean and standard deviation of `values`; None when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = (n > 1).then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
        Some(MeanStd { mean, std, n })
    }
}

/// Runs that share everything but their seed.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedGroup {
    /// The variant of the runs.
    pub variant: Option<String>,
    /// Values of the axes other than seed and variant axes, in axis order.
    pub key: Vec<(String, String)>,
    /// The settings that tell this group apart from another group of the same variant and axis values (e.g.
    /// `filter=correct_to_correct` beside `filter=non_decreasing`, both written ENF); empty when no other group
    /// shares its variant and axes.
    pub distinct: Vec<(String, String)>,
    /// Indices into `ResultSet::cells`, in cell order.
    pub members: Vec<usize>,
    /// The seed of each member (its seed-axis values joined by "/").
    pub seeds: Vec<String>,
}

impl SeedGroup {
    /// A label such as "EIE", "EIE (task=math)" or "ENF (protocol=paper)".
    pub fn label(&self) -> String {
        let variant = self.variant.clone().unwrap_or_else(|| "?".into());
        let parts: Vec<String> = self.key.iter().chain(&self.distinct).map(|(k, v)| format!("{k}={v}")).collect();
        if parts.is_empty() {
            variant
        } else {
            format!("{variant} ({})", parts.join(", "))
        }
    }

    /// The variant, with the settings that tell it apart from a group of the same variant and axes.
    pub fn variant_label(&self) -> Option<String> {
        let variant = self.variant.clone()?;
        if self.distinct.is_empty() {
            return Some(variant);
        }
        let parts: Vec<String> = self.distinct.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Some(format!("{variant} ({})", parts.join(", ")))
    }
}

type ExperimentKey = Vec<(&'static str, String)>;

/// Groups the runs by variant, every non-seed axis and the settings of their experiment (a sweep over
/// `protocol` or over N filters gives groups of one variant that must not be averaged together). A run whose
/// settings are unknown joins the first group of its variant and axes. Each run belongs to exactly one group;
/// groups are in order of their first run.
pub fn group_by_seed(set: &ResultSet) -> Vec<SeedGroup> {
    let mut groups: Vec<(SeedGroup, Option<ExperimentKey>)> = Vec::new();
    for (i, cell) in set.cells.iter().enumerate() {
        let variant = cell.variant();
        let key: Vec<(String, String)> = set
            .axes
            .iter()
            .filter(|a| !is_seed_axis(a) && !is_variant_axis(a))
            .map(|a| (a.clone(), cell.axis_value(a).unwrap_or_default().to_string()))
            .collect();
        let seed: Vec<&str> = set.axes.iter().filter(|a| is_seed_axis(a)).filter_map(|a| cell.axis_value(a)).collect();
        let seed = seed.join("/");
        let experiment = cell.settings.as_ref().map(|s| s.experiment_key());
        let fits = |g: &SeedGroup, e: &Option<ExperimentKey>| {
            g.variant == variant && g.key == key && (experiment.is_none() || e.is_none() || *e == experiment)
        };
        match groups.iter_mut().find(|(g, e)| fits(g, e)) {
            Some((g, e)) => {
                g.members.push(i);
                g.seeds.push(seed);
                if e.is_none() {
                    *e = experiment;
                }
            }
            None => groups.push((
                SeedGroup { variant, key, distinct: Vec::new(), members: vec![i], seeds: vec![seed] },
                experiment,
            )),
        }
    }
    // Groups of one variant and axis values are told apart by the settings that differ among them.
    let same_place = |a: &SeedGroup, b: &SeedGroup| a.variant == b.variant && a.key == b.key;
    let distinct: Vec<Vec<(String, String)>> = groups
        .iter()
        .map(|(g, e)| {
            let siblings: Vec<&Option<ExperimentKey>> =
                groups.iter().filter(|(o, _)| same_place(g, o)).map(|(_, e)| e).collect();
            if siblings.len() > 1 {
                distinguishing(e.as_ref(), &siblings)
            } else {
                Vec::new()
            }
        })
        .collect();
    for ((g, _), d) in groups.iter_mut().zip(distinct) {
        g.distinct = d;
    }
    groups.into_iter().map(|(g, _)| g).collect()
}

/// The settings of `own` that differ among `siblings` (the protocol alone when it differs: it explains the rest).
fn distinguishing(own: Option<&ExperimentKey>, siblings: &[&Option<ExperimentKey>]) -> Vec<(String, String)> {
    let Some(own) = own else {
        return vec![("settings".into(), "unknown".into())];
    };
    let differs = |name: &str| {
        let value = |e: &ExperimentKey| e.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        let mine = value(own);
        siblings.iter().any(|s| s.as_ref().is_some_and(|s| value(s) != mine))
    };
    let named: Vec<(String, String)> =
        own.iter().filter(|(n, _)| differs(n)).map(|(n, v)| (n.to_string(), v.clone())).collect();
    match named.iter().find(|(n, _)| n == "protocol") {
        Some(p) => vec![p.clone()],
        None => named,
    }
}

/// Whether the set has runs that differ only by seed (so mean ± std over seeds means something).
pub fn has_seed_replicates(set: &ResultSet) -> bool {
    set.axes.iter().any(|a| is_seed_axis(a)) && group_by_seed(set).iter().any(|g| g.members.len() > 1)
}

/// Mean over runs of the test correction accuracy at each iteration (each iteration over the runs that reached
/// it), as far as the longest run goes.
pub fn mean_curve(cells: &[&CellResults]) -> Vec<Option<MeanStd>> {
    let len = cells.iter().map(|c| c.iterations.len()).max().unwrap_or(0);
    (0..len)
        .map(|i| {
            let values: Vec<f64> =
                cells.iter().filter_map(|c| c.iterations.get(i)).map(|m| m.test_correction_accuracy).collect();
            MeanStd::of(&values)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::load::load_results;
    use crate::report::testutil::*;

    #[test]
    fn max_takes_the_first_best_iteration() {
        assert_eq!(max_with_index([0.138, 0.228, 0.216, 0.228]), Some((0.228, 1)));
        assert_eq!(max_with_index([0.3]), Some((0.3, 0)));
        assert_eq!(max_with_index(Vec::<f64>::new()), None);
    }

    #[test]
    fn mean_and_sample_std() {
        let m = MeanStd::of(&[0.2, 0.3, 0.4]).unwrap();
        assert!((m.mean - 0.3).abs() < 1e-12);
        assert!((m.std.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(MeanStd::of(&[0.5]).unwrap().std, None);
        assert_eq!(MeanStd::of(&[]), None);
    }

    #[test]
    fn seed_axes_are_recognised() {
        assert!(is_seed_axis("seed") && is_seed_axis("random_seed") && is_seed_axis("ft.training.seed"));
        assert!(!is_seed_axis("task") && !is_seed_axis("seeding.mode"));
    }

    #[test]
    fn runs_group_by_everything_but_the_seed() {
        let tmp = tempfile::tempdir().unwrap();
        let names = [
            "variant=EIE,task=qa,seed=1",
            "variant=EIE,task=qa,seed=2",
            "variant=EIE,task=math,seed=1",
            "variant=FNF,task=qa,seed=1",
        ];
        write_sweep_index(tmp.path(), "sw", &["variant", "task", "seed"], &names);
        for n in names {
            write_run(&tmp.path().join(n), &n[8..11], &[0.1, 0.2], true);
        }
        let set = load_results(tmp.path()).unwrap();
        let groups = group_by_seed(&set);
        let labels: Vec<String> = groups.iter().map(|g| g.label()).collect();
        assert_eq!(labels, vec!["EIE (task=qa)", "EIE (task=math)", "FNF (task=qa)"]);
        assert_eq!(groups[0].members, vec![0, 1]);
        assert_eq!(groups[0].seeds, vec!["1", "2"]);
        assert!(has_seed_replicates(&set));
    }

    #[test]
    fn runs_of_one_variant_with_different_settings_are_not_averaged_together() {
        let tmp = tempfile::tempdir().unwrap();
        // A sweep over N filters: both filters write the variant ENF.
        let names = [
            "filter=non_decreasing,seed=1",
            "filter=correct_to_correct,seed=1",
            "filter=non_decreasing,seed=2",
            "filter=correct_to_correct,seed=2",
        ];
        write_sweep_index(tmp.path(), "sw", &["filter", "seed"], &names);
        for n in names {
            let filter = if n.contains("non_decreasing") { "non_decreasing" } else { "correct_to_correct" };
            let config = RunConfigFixture { filter: Some(filter), ..RunConfigFixture::stasc_defaults() };
            write_run_as(&tmp.path().join(n), "ENF", &[0.1, 0.2], true, Some(&config), 0);
        }
        let set = load_results(tmp.path()).unwrap();
        let groups = group_by_seed(&set);
        let labels: Vec<String> = groups.iter().map(|g| g.label()).collect();
        assert_eq!(labels, ["ENF (filter=non_decreasing)", "ENF (filter=correct_to_correct)"]);
        assert_eq!(groups[0].members, [0, 2]);
        assert_eq!(groups[1].members, [1, 3]);

        // Runs of two protocols: the label names the protocol, not each setting it changes.
        let other = tempfile::tempdir().unwrap();
        write_run_as(&other.path().join("a"), "EIE", &[0.1], true, Some(&RunConfigFixture::paper()), 0);
        write_run_as(&other.path().join("b"), "EIE", &[0.1], true, Some(&RunConfigFixture::stasc_defaults()), 0);
        write_run_as(&other.path().join("c"), "EIE", &[0.1], true, None, 0);
        let groups = group_by_seed(&load_results(other.path()).unwrap());
        let labels: Vec<String> = groups.iter().map(|g| g.label()).collect();
        // The run without settings joins the first group of its variant.
        assert_eq!(labels, ["EIE (protocol=paper)", "EIE (protocol=stasc)"]);
        assert_eq!(groups[0].members, [0, 2]);
        assert_eq!(groups[1].variant_label().as_deref(), Some("EIE (protocol=stasc)"));
    }
}
