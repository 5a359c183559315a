//! The batch script of one job array: a task per cell, numbered by the cell's place in the grid, each running
//! exactly the `stasc run` command line a local sweep starts ([`run_argv`]), appending to the cell's log.txt.

use std::path::Path;

use super::options::SlurmOptions;
use crate::rundir_lock::BUSY_EXIT_CODE;
use crate::sweep::exec::{run_argv, CellPlan};

/// What the script needs besides the options.
#[derive(Debug, Clone)]
pub struct ArrayJob<'a> {
    /// Sweep name (for the default job name).
    pub sweep: &'a str,
    /// The stasc executable every task starts.
    pub exe: &'a Path,
    /// The directory the tasks run in (relative paths in the cell configs are relative to it).
    pub workdir: &'a Path,
    /// Where Slurm writes each task's own output (`%A_%a.out`).
    pub slurm_dir: &'a Path,
    /// (array index, cell) of every cell to run.
    pub cells: &'a [(usize, &'a CellPlan)],
}

/// The `--array` value: the cells' indexes, then `%N` when throttled.
pub fn array_spec(indexes: impl IntoIterator<Item = usize>, throttle: Option<u32>) -> String {
    let list: Vec<String> = indexes.into_iter().map(|i| i.to_string()).collect();
    match throttle {
        Some(n) => format!("{}%{n}", list.join(",")),
        None => list.join(","),
    }
}

/// The script's text.
pub fn batch_script(job: &ArrayJob<'_>, options: &SlurmOptions) -> String {
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(
        "# Written by `stasc sweep`: one array task per cell. Rerun `stasc sweep` to submit what is unfinished.\n",
    );
    let mut sbatch = options.sbatch_options(job.sweep);
    sbatch.push(format!("--array={}", array_spec(job.cells.iter().map(|(i, _)| *i), options.throttle)));
    sbatch.push(format!("--output={}", job.slurm_dir.join("%A_%a.out").display()));
    // A preempted task is requeued with the same job id and appends to its logs; its cell resumes.
    sbatch.push("--open-mode=append".into());
    sbatch.push("--requeue".into());
    sbatch.push(format!("--chdir={}", job.workdir.display()));
    for line in sbatch {
        s.push_str(&format!("#SBATCH {line}\n"));
    }
    s.push_str("set -u\ncase \"${SLURM_ARRAY_TASK_ID:-}\" in\n");
    for (index, cell) in job.cells {
        let mut argv = vec![quote(&job.exe.to_string_lossy())];
        argv.extend(run_argv(cell).iter().map(|a| quote(&a.to_string_lossy())));
        s.push_str(&format!(
            "  {index}) dir={}\n     set -- {} ;;\n",
            quote(&cell.dir.to_string_lossy()),
            argv.join(" ")
        ));
    }
    s.push_str("  *) echo \"stasc: array task '${SLURM_ARRAY_TASK_ID:-}' is no cell of this script\" >&2; exit 2 ;;\n");
    s.push_str("esac\n");
    s.push_str(&format!(
        r#"# libtorch uses the CPUs Slurm granted, not every core of the node. CUDA_VISIBLE_DEVICES is Slurm's.
if [ -n "${{SLURM_CPUS_PER_TASK:-}}" ] && [ -z "${{OMP_NUM_THREADS:-}}" ]; then
  export OMP_NUM_THREADS="$SLURM_CPUS_PER_TASK"
fi
mkdir -p "$dir"
echo "[slurm] job ${{SLURM_JOB_ID:-}} (array task ${{SLURM_ARRAY_JOB_ID:-}}_${{SLURM_ARRAY_TASK_ID}}) on $(hostname), CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}}" >> "$dir/log.txt"
"$@" >> "$dir/log.txt" 2>&1
rc=$?
# {busy}: another runner holds the cell (skipped, not failed). 128 and above: killed by a signal (preempted,
# cancelled, out of time): the cell stays resumable. Anything else is the cell's failure, recorded as local sweeps do.
if [ "$rc" -eq {busy} ]; then
  exit 0
fi
if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] && [ ! -e "$dir/DONE" ]; then
  last="$(grep -v '^[[:space:]]*$' "$dir/log.txt" | tail -n 1)"
  printf 'stasc run exited with status %s: %s (see %s)\n' "$rc" "$last" "$dir/log.txt" > "$dir/.FAILED.tmp"
  mv "$dir/.FAILED.tmp" "$dir/FAILED"
fi
exit "$rc"
"#,
        busy = BUSY_EXIT_CODE
    ));
    s
}

/// Single-quotes a word for the shell.
pub fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cell(name: &str) -> CellPlan {
        let dir = PathBuf::from("runs/s").join(name);
        CellPlan {
            name: name.into(),
            overrides: vec![],
            config: dir.join("stasc_config.yaml"),
            ft_config: dir.join("fine_tune.yaml"),
            dir,
            accelerate_config: Some(PathBuf::from("configs/it's.yaml")),
        }
    }

    #[test]
    fn the_script_runs_each_cell_by_its_grid_index_with_the_options() {
        let (a, b) = (cell("seed=1"), cell("seed=3"));
        let cells = [(0, &a), (2, &b)];
        let options = SlurmOptions { gpus: 2, throttle: Some(1), partition: Some("gpu".into()), ..Default::default() };
        let job = ArrayJob {
            sweep: "s",
            exe: Path::new("/opt/stasc"),
            workdir: Path::new("/home/u/p"),
            slurm_dir: Path::new("/home/u/p/runs/s/slurm"),
            cells: &cells,
        };
        let text = batch_script(&job, &options);
        for line in [
            "#SBATCH --job-name=stasc-s",
            "#SBATCH --partition=gpu",
            "#SBATCH --gres=gpu:2",
            "#SBATCH --array=0,2%1",
            "#SBATCH --output=/home/u/p/runs/s/slurm/%A_%a.out",
            "#SBATCH --open-mode=append",
            "#SBATCH --requeue",
            "#SBATCH --chdir=/home/u/p",
            "  2) dir='runs/s/seed=3'",
            "     set -- '/opt/stasc' 'run' '--config' 'runs/s/seed=3/stasc_config.yaml' '--ft_config' \
             'runs/s/seed=3/fine_tune.yaml' '--accelerate_config_path' 'configs/it'\\''s.yaml' '--out' 'runs/s/seed=3' ;;",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn the_script_is_valid_bash_and_picks_the_cell_of_the_task() {
        // Run the script's dispatch with bash itself, the task's command replaced by `echo`.
        let (a, b) = (cell("seed=1"), cell("seed=3"));
        let cells = [(0, &a), (2, &b)];
        let dir = tempfile::tempdir().unwrap();
        let job =
            ArrayJob { sweep: "s", exe: Path::new("echo"), workdir: dir.path(), slurm_dir: dir.path(), cells: &cells };
        let script = dir.path().join("job.sh");
        std::fs::write(&script, batch_script(&job, &SlurmOptions::default())).unwrap();
        let out = std::process::Command::new("bash")
            .arg(&script)
            .current_dir(dir.path())
            .env("SLURM_ARRAY_TASK_ID", "2")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let log = std::fs::read_to_string(dir.path().join("runs/s/seed=3/log.txt")).unwrap();
        assert!(log.contains("run --config runs/s/seed=3/stasc_config.yaml"), "{log}");
        assert!(log.contains("--accelerate_config_path configs/it's.yaml --out runs/s/seed=3"), "{log}");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .current_dir(dir.path())
            .env("SLURM_ARRAY_TASK_ID", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
    }
}
