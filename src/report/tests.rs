//! Whole reports written from run directories built in a temporary directory.

use std::fs;

use super::svg::check_well_formed;
use super::testutil::*;
use super::*;

fn sweep_with_failure(root: &Path) -> PathBuf {
    let sweep = root.join("paper_grid");
    let names = ["variant=EIE,seed=1", "variant=EIE,seed=2", "variant=FNF,seed=1", "variant=FNF,seed=2"];
    write_sweep_index(&sweep, "paper_grid", &["variant", "seed"], &names);
    write_run(&sweep.join(names[0]), "EIE", &[0.125, 0.25, 0.25], true);
    write_run(&sweep.join(names[1]), "EIE", &[0.125, 0.375, 0.25], true);
    write_run(&sweep.join(names[2]), "FNF", &[0.5, 0.25], false);
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
            "summary.md",
            "summary.tex",
            "paper_table.csv",
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
    assert!(summary.contains("\"variant=FNF,seed=2\",FNF,2,failed after 0 iterations: stasc run exited with 1: CUDA out of memory,0,,,,,,,"), "{summary}");
    let md = fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("| EIE | 1, 2 | 2/2 | 0.250 ± 0.000 | 0.125 ± 0.000 | 0.312 ± 0.088 | 0.250 ± 0.000 |\n| FNF | 1 | 0/2 | 0.250 | 0.500 | 0.500 | 0.250 |"), "{md}");
    let tex = fs::read_to_string(out.join("summary.tex")).unwrap();
    assert!(tex.contains("0.312 $\\pm$ 0.088") && tex.contains("\\toprule"), "{tex}");
    let paper = fs::read_to_string(out.join("paper_table.md")).unwrap();
    assert!(paper.contains("| EIE | ours (mean of 2) | 0.125 | 0.312 | 0.250 | — |"), "{paper}");
    assert!(paper.contains("| EIE | Δ | -0.013 | +0.084 | +0.034 | — |"), "{paper}");

    let html = fs::read_to_string(out.join("index.html")).unwrap();
    for needle in [
        "<h2 id=\"summary\">Summary</h2>",
        "Mean ± standard deviation over seeds",
        "Paper table (Qwen2.5-1.5B-Instruct)",
        "CUDA out of memory",
        "<td class=\"num\">0.375</td>",
        "Unfinished runs",
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
