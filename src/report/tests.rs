//! Whole reports written from run directories built in a temporary directory.

use std::fs;

use super::svg::check_well_formed;
use super::testutil::*;
use super::*;

fn sweep_with_failure(root: &Path) -> PathBuf {
    let sweep = root.join("paper_grid");
    let names = ["variant=EIE,seed=1", "variant=EIE,seed=2", "variant=FNF,seed=1", "variant=FNF,seed=2"];
    write_sweep_index(&sweep, "paper_grid", &["variant", "seed"], &names);
    // EIE under the paper protocol, FNF under stasc's own defaults (both with per-question rewards).
    write_paper_run(&sweep.join(names[0]), "EIE", &[0.124, 0.25, 0.25], true);
    write_paper_run(&sweep.join(names[1]), "EIE", &[0.124, 0.376, 0.25], true);
    write_run_as(&sweep.join(names[2]), "FNF", &[0.5, 0.25], false, Some(&RunConfigFixture::stasc_defaults()), 500);
    fs::create_dir_all(sweep.join(names[3])).unwrap();
    fs::write(sweep.join(names[3]).join("FAILED"), "stasc run exited with 1: CUDA out of memory\n").unwrap();
    sweep
}

fn svgs(html: &str) -> Vec<&str> {
    html.match_indices("<svg").map(|(i, _)| &html[i..i + html[i..].find("</svg>").unwrap() + 6]).collect()
}

#[test]
fn sweep_report_writes_every_file_and_marks_unfinished_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = sweep_with_failure(tmp.path());
    let out = tmp.path().join("report");
    let options = ReportOptions { out: out.clone(), paper_model: Some(DEFAULT_MODEL_LABEL.into()), templates: None };
    let outcome = write_report(&sweep, &options).unwrap();
    let names: Vec<String> =
        outcome.files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        names,
        [
            "results.csv",
            "loss_curves.csv",
            "summary.csv",
            "summary_seeds.csv",
            "pairwise.csv",
            "summary.md",
            "summary.tex",
            "paper_table.csv",
            "paper_settings.csv",
            "paper_table.md",
            "paper_table.tex",
            "index.html"
        ]
    );
    assert_eq!(
        outcome.notes,
        [
            "variant=FNF,seed=1: 2/3 iterations, running or failed",
            "variant=FNF,seed=2: failed after 0 iterations: stasc run exited with 1: CUDA out of memory"
        ]
    );
    let mut on_disk: Vec<String> =
        fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    on_disk.sort();
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(on_disk, expected, "no temporary file may be left");

    let summary = fs::read_to_string(out.join("summary.csv")).unwrap();
    let failed =
        "\"variant=FNF,seed=2\",FNF,2,failed after 0 iterations: stasc run exited with 1: CUDA out of memory,0,";
    assert!(summary.contains(&format!("{failed}{}\n", ",".repeat(14))), "{summary}");
    let md = fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("| EIE | 1, 2 | 2/2 | 0.250 ± 0.000 [0.2"), "{md}");
    assert!(md.contains("| FNF | 1 | 0/2 | 0.250 [0.2"), "{md}");
    // The pair differs in its best iteration (0.313 against 0.5), not in its last (0.25 both).
    assert!(md.contains("## Differences between variants beyond the 95% interval"), "{md}");
    assert!(md.contains("1 of 1 pairs compared differ beyond the 95% interval:\n\n| a | b | questions |"), "{md}");
    assert!(
        md.contains("| EIE | FNF | 500 | 0.250 / 0.250 | +0.000 [+0.000, +0.000] | 0.313 / 0.500 | -0.187* ["),
        "{md}"
    );
    let pairwise = fs::read_to_string(out.join("pairwise.csv")).unwrap();
    assert_eq!(pairwise.lines().count(), 2, "{pairwise}");
    assert!(pairwise.lines().nth(1).unwrap().ends_with(",true"), "{pairwise}");
    let tex = fs::read_to_string(out.join("summary.tex")).unwrap();
    assert!(tex.contains("0.313 $\\pm$ 0.089 [0.2") && tex.contains("\\toprule"), "{tex}");
    let paper = fs::read_to_string(out.join("paper_table.md")).unwrap();
    assert!(paper.contains("| EIE | ours (mean of 2) | 0.124 [0.09"), "{paper}");
    assert!(paper.contains("| EIE | Δ | -0.014 [-0.0"), "{paper}");
    assert!(paper.contains(" | +0.085* [+0.0"), "{paper}");
    assert!(
        paper.contains("| FNF | not comparable: pairing per_initial (published all_pairs); filter non_decreasing (published correct_to_correct); "),
        "{paper}"
    );
    assert!(
        paper.contains("## Settings") && paper.contains("| pairing | all_pairs | all_pairs | per_initial ✗ |"),
        "{paper}"
    );
    assert!(paper.contains("* = ours and published differ beyond the 95% interval"), "{paper}");
    let settings = fs::read_to_string(out.join("paper_settings.csv")).unwrap();
    assert!(settings.starts_with("label,variant,setting,published,ours,agreement,source\n"), "{settings}");
    assert!(settings.contains("\nFNF,FNF,evaluator_mode,default,final,differs,"), "{settings}");
    let tex = fs::read_to_string(out.join("paper_table.tex")).unwrap();
    assert!(tex.contains("per\\_initial $\\times$"), "{tex}");

    let html = fs::read_to_string(out.join("index.html")).unwrap();
    for needle in [
        "<h2 id=\"summary\">Summary</h2>",
        "Mean ± standard deviation over seeds",
        "Paper table (Qwen2.5-1.5B-Instruct)",
        "CUDA out of memory",
        "Unfinished runs",
        "<h3 id=\"pairwise\">Differences between variants beyond the 95% interval</h3>",
        "<p>1 of 1 pairs compared differ beyond the 95% interval:</p>",
        "<h3 id=\"settings\">Settings</h3>",
        "<td class=\"differs\">per_initial ✗</td>",
        "<tr class=\"not-comparable\"><td>FNF</td><td colspan=\"15\">not comparable: pairing per_initial",
        "<td class=\"num\">0.124<br><span class=\"ci\">[0.09",
        "N (iterations) is shown but not compared",
    ] {
        assert!(html.contains(needle), "missing {needle}");
    }
    let charts = svgs(&html);
    // One paper chart per variant (all have published numbers), four overview charts, loss curves of the three
    // runs that trained.
    assert_eq!(charts.len(), 8 + 4 + 3);
    for svg in charts {
        let elements = check_well_formed(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
        assert!(elements.iter().any(|e| e == "text"));
    }
}

#[test]
fn rerun_without_paper_removes_the_stale_paper_table() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = sweep_with_failure(tmp.path());
    let out = tmp.path().join("r");
    let mut options =
        ReportOptions { out: out.clone(), paper_model: Some(DEFAULT_MODEL_LABEL.into()), templates: None };
    write_report(&sweep, &options).unwrap();
    assert!(out.join("paper_table.csv").is_file());
    options.paper_model = None;
    write_report(&sweep, &options).unwrap();
    assert!(!out.join("paper_table.csv").exists());
    assert!(!fs::read_to_string(out.join("index.html")).unwrap().contains("Paper table"));
}

#[test]
fn default_output_is_named_after_the_input() {
    assert_eq!(default_out_dir(Path::new("runs/demo")), Path::new("reports/demo"));
}

#[test]
fn run_names_with_html_show_as_typed_in_summary_md() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("<b>runs");
    write_run(&runs.join("<script>alert(1)"), "EIE", &[0.25, 0.5], true);
    write_run(&runs.join("plain"), "FNF", &[0.25, 0.5], false);
    let out = tmp.path().join("report");
    let options = ReportOptions { out: out.clone(), paper_model: None, templates: None };
    write_report(&runs, &options).unwrap();
    let md = fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(!md.contains('<') && !md.contains('>'), "{md}");
    assert!(md.starts_with("# &lt;b&gt;runs\n"), "{md}");
    assert!(md.contains("| &lt;script&gt;alert(1) |"), "{md}");
}
