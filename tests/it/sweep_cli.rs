//! `stasc sweep --dry-run` on the shipped sweep files, and the one-line error of a bad sweep file.

use std::path::Path;
use std::process::Command;

fn stasc(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stasc")).current_dir(cwd).args(args).output().unwrap()
}

#[test]
fn dry_run_lists_and_validates_the_cells_of_the_shipped_sweeps() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = stasc(root, &["sweep", "experiments/ablation.toml", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("sweep ablation (8 cells)"), "{stdout}");
    assert!(stdout.contains("init=E,filter=I,ft=E,task=qa,reward=in_acc,seed=42"), "{stdout}");
    assert!(stdout.contains("every cell's configuration is valid"));
    // The configurations are valid, but the paper's model is a hub id and its dataset is not in the clone: each
    // problem is one line for every cell, and the dry run fails.
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(
            "error: experiments/ablation.toml: every cell: model_path Qwen/Qwen2.5-1.5B-Instruct is not a directory"
        ),
        "{stderr}"
    );
    assert_eq!(
        lines[1],
        "error: experiments/ablation.toml: every cell: data_path: dataset data/datasets/s_nq not found (data_path)"
    );
    let out = stasc(root, &["sweep", "experiments/demo.toml", "--dry-run"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("variant=FNE,seed=42"));
    let out = stasc(root, &["sweep", "experiments/ablation_slurm.toml", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The same paper configuration: valid, with the same two missing files (hub id, dataset) for every cell.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    assert!(stderr.contains("experiments/ablation_slurm.toml: every cell: model_path Qwen/Qwen2.5-1.5B-Instruct"));
    assert!(stdout.contains("every cell's configuration is valid"), "{stdout}");
    assert!(stdout.contains("sweep ablation_slurm (16 cells)"), "{stdout}");
    assert!(
        stdout.contains("executor slurm: one job array, each task with --job-name=stasc-ablation_slurm"),
        "{stdout}"
    );
    assert!(stdout.contains("--gres=gpu:2"), "{stdout}");
}

#[test]
fn a_local_sweep_runs_a_real_cell_through_the_process_runner() {
    let sweep = super::slurm::TinySweep::new(&[3], 2, 8, "local");
    let out = sweep.stasc(&["sweep", "sweep.toml"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.lines().any(|l| l.starts_with("seed=3 ") && l.ends_with(" ran")), "{text}");
    let cell = sweep.cell(3);
    assert!(cell.join("DONE").exists() && cell.join("iter_1/metrics.json").exists());
    super::slurm::assert_complete_samples(&cell, 2);
    assert_eq!(stasc::rundir_lock::holder(&cell), None, "the cell's lock is released at its end");
}

#[test]
fn a_bad_sweep_file_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.toml"),
        "[sweep]\nconfig = \"c.yaml\"\nft_config = \"f.yaml\"\n[grid]\nfilter = [\"X\"]\n",
    )
    .unwrap();
    let out = stasc(dir.path(), &["sweep", "s.toml", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("c.yaml"), "the missing base config is named: {stderr}");
    std::fs::write(dir.path().join("s.toml"), "[sweep]\nconfg = \"c.yaml\"\n").unwrap();
    let stderr = String::from_utf8_lossy(&stasc(dir.path(), &["sweep", "s.toml"]).stderr).to_string();
    assert_eq!(stderr.trim(), "error: s.toml: unknown key 'sweep.confg' (did you mean 'config'?)");
}
