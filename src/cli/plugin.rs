//! `stasc plugin`: list the available rewards (built-ins and plugins found on disk, with ABI versions) and
//! scaffold a new reward plugin crate that builds and loads without edits.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use stasc_plugin::ABI_VERSION;

use crate::config::EvaluatorFunction;
use crate::reward::builtin_description;
use crate::reward::plugin::{default_plugin_dirs, discover, library_file_name};

/// Reward plugins: list what is available, or scaffold a new plugin crate.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// `stasc plugin` actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Print the built-in rewards and the plugins found in the plugin directories, with their ABI versions.
    List {
        /// Extra directories to search (before STASC_PLUGIN_PATH and the build directories).
        #[arg(long = "plugin-dir")]
        plugin_dirs: Vec<PathBuf>,
    },
    /// Create a reward plugin crate (a cdylib using the stasc-plugin SDK) named NAME in DIR/NAME.
    New {
        /// Crate name: letters, digits, '-' and '_', starting with a letter.
        name: String,
        /// Directory to create the crate in; inside this workspace's plugins/ it becomes a workspace member.
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
        /// The stasc-plugin SDK crate to depend on (default: the one this stasc was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

/// Runs the chosen action.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::List { plugin_dirs } => list(plugin_dirs),
        Action::New { name, dir, sdk } => new(&name, &dir, sdk),
    }
}

fn list(mut dirs: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    println!("built-in rewards:");
    for &function in EvaluatorFunction::ALL {
        println!("  {:<24} {}", function.name(), builtin_description(function));
    }
    dirs.extend(default_plugin_dirs());
    println!("plugins (this stasc loads ABI version {ABI_VERSION}; use them as --reward plugin:NAME):");
    let found = discover(&dirs);
    if found.is_empty() {
        let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        println!(
            "  none found in: {}",
            if searched.is_empty() { "(no directories)".into() } else { searched.join(", ") }
        );
    }
    for (path, result) in found {
        match result {
            Ok(info) => println!("  {:<24} ABI {}  {}", info.name, info.abi_version, path.display()),
            Err(err) => println!("  {:<24} unusable: {err}", "-"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn valid_crate_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `path` relative to `base` (both absolute and normalised), e.g. `../stasc-plugin`.
fn relative_path(path: &Path, base: &Path) -> PathBuf {
    let path: Vec<Component> = path.components().collect();
    let base: Vec<Component> = base.components().collect();
    let common = path.iter().zip(&base).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..base.len() {
        out.push("..");
    }
    for component in &path[common..] {
        out.push(component.as_os_str());
    }
    out
}

/// True when some ancestor workspace lists `crate_dir` among its members (`plugins/*`-style globs or exact
/// paths), in which case the new crate must not declare its own `[workspace]`.
fn is_workspace_member(crate_dir: &Path) -> bool {
    for ancestor in crate_dir.ancestors().skip(1) {
        let Ok(text) = fs::read_to_string(ancestor.join("Cargo.toml")) else { continue };
        let Ok(manifest) = text.parse::<toml::Table>() else { continue };
        let Some(workspace) = manifest.get("workspace").and_then(|w| w.as_table()) else { continue };
        let Ok(relative) = crate_dir.strip_prefix(ancestor) else { return false };
        let relative = relative.to_string_lossy().replace('\\', "/");
        let members = workspace.get("members").and_then(|m| m.as_array()).cloned().unwrap_or_default();
        return members.iter().filter_map(|m| m.as_str()).any(|pattern| match pattern.strip_suffix("/*") {
            Some(prefix) => relative.rsplit_once('/').is_some_and(|(parent, _)| parent == prefix),
            None => pattern == relative,
        });
    }
    false
}

fn manifest(name: &str, sdk: &Path, standalone: bool) -> String {
    let sdk = sdk.to_string_lossy().replace('\\', "/");
    let mut text = format!(
        "[package]\nname = \"{name}\"\ndescription = \"A stasc reward plugin.\"\nversion = \"0.1.0\"\n\
         edition = \"2021\"\npublish = false\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\n\
         stasc-plugin = {{ path = \"{sdk}\" }}\n"
    );
    if standalone {
        text.push_str("\n# Its own workspace, so it builds wherever it lives.\n[workspace]\n");
    }
    text
}

fn lib_rs(name: &str) -> String {
    format!(
        r#"//! `{name}`: a stasc reward plugin. Build it with cargo; use it as `--reward plugin:{name}` (or
//! `plugin:PATH/TO/{file}`) in `stasc score` and in run configs (`evaluator_function`).
//!
//! The host passes the gold answers and the text to score (the whole generation, or the text after the answer
//! marker in mode "final"); return a finite score, or an error message for this sample. Panics are caught.

/// Scores `answer` against the acceptable answers `gold`: 1.0 when one of them occurs in it (ignoring case).
fn score(gold: &[String], answer: &str) -> Result<f64, String> {{
    let answer = answer.to_lowercase();
    Ok(if gold.iter().any(|g| answer.contains(&g.to_lowercase())) {{ 1.0 }} else {{ 0.0 }})
}}

stasc_plugin::export_reward!("{name}", score);
"#,
        file = library_file_name(name),
    )
}

/// The SDK crate to depend on: `--sdk`, or the one in the source tree this binary was built from.
fn sdk_dir(sdk: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = sdk.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/stasc-plugin"));
    if !dir.join("Cargo.toml").is_file() {
        bail!("no stasc-plugin SDK crate at {} (expected a Cargo.toml there); pass --sdk PATH", dir.display());
    }
    dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))
}

fn new(name: &str, dir: &Path, sdk: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    if !valid_crate_name(name) {
        bail!("invalid plugin name {name:?}: use letters, digits, '-' and '_', starting with a letter");
    }
    let sdk = sdk_dir(sdk)?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
    let crate_dir = dir.join(name);
    if crate_dir.exists() {
        bail!("{} already exists; pick another name or directory", crate_dir.display());
    }
    let member = is_workspace_member(&crate_dir);
    // Inside a workspace a relative path keeps the clone relocatable; elsewhere the absolute path always works.
    let sdk_path = if member { relative_path(&sdk, &crate_dir) } else { sdk.clone() };
    // Build the crate under a temporary name and rename it, so a failure never leaves half a crate behind.
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}-"))
        .tempdir_in(&dir)
        .with_context(|| format!("cannot create a temporary directory in {}", dir.display()))?;
    fs::create_dir(staging.path().join("src"))?;
    fs::write(staging.path().join("Cargo.toml"), manifest(name, &sdk_path, !member))?;
    fs::write(staging.path().join("src/lib.rs"), lib_rs(name))?;
    fs::rename(staging.path(), &crate_dir).with_context(|| format!("cannot create {}", crate_dir.display()))?;
    // The staging directory was moved; nothing is left for its guard to clean up.
    let _ = staging.keep();
    println!("created {}", crate_dir.display());
    if member {
        println!("build it with: cargo build -p {name}");
        println!("then use it as: stasc score --reward plugin:{name} --input FILE.jsonl");
    } else {
        let manifest_path = crate_dir.join("Cargo.toml");
        println!("build it with: cargo build --manifest-path {}", manifest_path.display());
        let built = crate_dir.join("target/debug").join(library_file_name(name));
        println!("then use it as: stasc score --reward plugin:{} --input FILE.jsonl", built.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_are_checked() {
        assert!(valid_crate_name("my-reward_2"));
        assert!(
            !valid_crate_name("2fast") && !valid_crate_name("a b") && !valid_crate_name("") && !valid_crate_name("x\"")
        );
    }

    #[test]
    fn relative_paths_climb_to_the_common_ancestor() {
        let rel = relative_path(Path::new("/w/plugins/stasc-plugin"), Path::new("/w/plugins/mine"));
        assert_eq!(rel, PathBuf::from("../stasc-plugin"));
        assert_eq!(relative_path(Path::new("/a/b"), Path::new("/c")), PathBuf::from("../a/b"));
    }

    #[test]
    fn workspace_membership_follows_member_globs() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("Cargo.toml"), "[workspace]\nmembers = [\".\", \"plugins/*\", \"extra\"]\n")
            .unwrap();
        assert!(is_workspace_member(&root.path().join("plugins/new")));
        assert!(is_workspace_member(&root.path().join("extra")));
        assert!(!is_workspace_member(&root.path().join("elsewhere/new")));
        assert!(!is_workspace_member(&root.path().join("plugins/deep/new")));
    }

    #[test]
    fn scaffold_text_names_the_plugin() {
        let text = lib_rs("my-reward");
        assert!(text.contains("export_reward!(\"my-reward\", score)"));
        let standalone = manifest("my-reward", Path::new("/sdk"), true);
        assert!(standalone.contains("stasc-plugin = { path = \"/sdk\" }") && standalone.contains("[workspace]"));
        assert!(!manifest("my-reward", Path::new("../sdk"), false).contains("[workspace]"));
    }
}
