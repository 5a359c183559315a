//! `stasc templates export DIR`: writes the built-in prompt templates, few-shot files and report templates into a
//! directory, where a user edits them and points `template_dir`, `few_shot_dir` and `stasc report --templates` at.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::prompt::builtin;
use crate::report::html::BUILTIN_TEMPLATES;

/// Arguments of `stasc templates`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do with the built-in templates.
    #[command(subcommand)]
    pub action: Action,
}

/// The `stasc templates` actions.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Write the built-in files into DIR: DIR/templates/prompts/<task>/*.jinja, DIR/few_shots/*.json and
    /// DIR/templates/report/*.html. Then set `template_dir: DIR/templates` and `few_shot_dir: DIR/few_shots` in
    /// stasc_config.yaml (and pass `--templates DIR/templates/report` to `stasc report`) to use your edits.
    Export {
        /// The directory to write into (created if missing).
        dir: PathBuf,
        /// Overwrite files that already exist there.
        #[arg(long)]
        force: bool,
    },
}

/// Every built-in file, by its path under an export directory.
pub fn built_in_files() -> Vec<(PathBuf, &'static str)> {
    let templates = builtin::TEMPLATES.iter().map(|(p, text)| (Path::new("templates").join(p), *text));
    let few_shots = builtin::FEW_SHOTS.iter().map(|(n, text)| (Path::new("few_shots").join(n), *text));
    let report = BUILTIN_TEMPLATES.iter().map(|(n, text)| (Path::new("templates/report").join(n), *text));
    templates.chain(few_shots).chain(report).collect()
}

/// Runs `stasc templates`.
pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    match args.action {
        Action::Export { dir, force } => {
            let written = export(&dir, force)?;
            println!("wrote {} files into {}", written.len(), dir.display());
            println!(
                "use them with `template_dir: {}` and `few_shot_dir: {}` in stasc_config.yaml",
                dir.join("templates").display(),
                dir.join("few_shots").display()
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// Writes every built-in file under `dir` and returns their paths. Refuses, before writing anything, when a file
/// exists there and `force` is false; each file appears whole (written to a temporary name, then renamed).
pub fn export(dir: &Path, force: bool) -> anyhow::Result<Vec<PathBuf>> {
    let files = built_in_files();
    if !force {
        if let Some((path, _)) = files.iter().find(|(p, _)| dir.join(p).exists()) {
            bail!(
                "{} exists already; export into another directory, or pass --force to overwrite",
                dir.join(path).display()
            );
        }
    }
    let mut written = Vec::with_capacity(files.len());
    for (relative, text) in files {
        let path = dir.join(relative);
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let mut temp = tempfile::Builder::new()
            .prefix(".stasc-export-")
            .tempfile_in(parent)
            .with_context(|| format!("cannot create a temporary file in {}", parent.display()))?;
        temp.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        temp.persist(&path).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_writes_the_clone_layout_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let written = export(dir.path(), false).unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(written.len(), builtin::TEMPLATES.len() + builtin::FEW_SHOTS.len() + BUILTIN_TEMPLATES.len());
        for path in &written {
            let relative = path.strip_prefix(dir.path()).unwrap();
            assert_eq!(std::fs::read(path).unwrap(), std::fs::read(root.join(relative)).unwrap(), "{path:?}");
        }
        // The exported directories load as template_dir and few_shot_dir.
        let templates = dir.path().join("templates");
        crate::prompt::PromptBuilder::load(Some(&templates), Some(&dir.path().join("few_shots")), "qa").unwrap();

        std::fs::write(templates.join("prompts/qa/initial.jinja"), "edited").unwrap();
        let err = export(dir.path(), false).unwrap_err().to_string();
        assert!(err.ends_with("exists already; export into another directory, or pass --force to overwrite"), "{err}");
        assert_eq!(std::fs::read_to_string(templates.join("prompts/qa/initial.jinja")).unwrap(), "edited");
        export(dir.path(), true).unwrap();
        assert_ne!(std::fs::read_to_string(templates.join("prompts/qa/initial.jinja")).unwrap(), "edited");
    }
}
