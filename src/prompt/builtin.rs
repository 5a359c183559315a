//! The default prompt templates and few-shot files, built into the binary so that stasc runs from any directory: a
//! configured `template_dir` / `few_shot_dir` replaces them, and `stasc templates export DIR` writes them out for
//! editing. The files are those of the clone's `templates/prompts/` and `few_shots/` at build time.

use std::path::PathBuf;

/// How the built-in files are named in messages, in place of a directory.
pub const BUILT_IN: &str = "<built-in>";

/// The built-in prompt templates, by their path inside a `template_dir`.
pub const TEMPLATES: &[(&str, &str)] = &[
    ("prompts/README.md", include_str!("../../templates/prompts/README.md")),
    ("prompts/qa/initial.jinja", include_str!("../../templates/prompts/qa/initial.jinja")),
    ("prompts/qa/correction.jinja", include_str!("../../templates/prompts/qa/correction.jinja")),
    ("prompts/qa/sft.jinja", include_str!("../../templates/prompts/qa/sft.jinja")),
    ("prompts/qa/texts.jinja", include_str!("../../templates/prompts/qa/texts.jinja")),
    ("prompts/math/initial.jinja", include_str!("../../templates/prompts/math/initial.jinja")),
    ("prompts/math/correction.jinja", include_str!("../../templates/prompts/math/correction.jinja")),
    ("prompts/math/sft.jinja", include_str!("../../templates/prompts/math/sft.jinja")),
    ("prompts/math/texts.jinja", include_str!("../../templates/prompts/math/texts.jinja")),
];

/// The built-in few-shot files, by their name inside a `few_shot_dir`.
pub const FEW_SHOTS: &[(&str, &str)] = &[
    ("qa_initial.json", include_str!("../../few_shots/qa_initial.json")),
    ("qa_correction.json", include_str!("../../few_shots/qa_correction.json")),
];

/// The built-in template at `path` (inside a `template_dir`, e.g. `prompts/qa/initial.jinja`).
pub fn template(path: &str) -> Option<&'static str> {
    TEMPLATES.iter().find(|(p, _)| *p == path).map(|(_, text)| *text)
}

/// The built-in few-shot file `name` (e.g. `qa_initial.json`).
pub fn few_shot(name: &str) -> Option<&'static str> {
    FEW_SHOTS.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}

/// The tasks that have built-in prompt templates, sorted.
pub fn tasks() -> Vec<String> {
    let mut tasks: Vec<String> = TEMPLATES
        .iter()
        .filter_map(|(p, _)| p.strip_prefix("prompts/")?.split_once('/').map(|(task, _)| task.to_string()))
        .collect();
    tasks.sort();
    tasks.dedup();
    tasks
}

/// The pseudo-path of a built-in file in messages, e.g. `<built-in>/prompts/qa/initial.jinja`.
pub fn label(path: &str) -> PathBuf {
    PathBuf::from(BUILT_IN).join(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every file below `dir`, as paths relative to it, sorted.
    fn files_under(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.push(path.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn the_tables_hold_every_shipped_file() {
        // A file added to templates/prompts or few_shots without a line here would be missing outside the clone.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let prompts: Vec<String> =
            files_under(&root.join("templates/prompts")).into_iter().map(|p| format!("prompts/{p}")).collect();
        let mut built_in: Vec<String> = TEMPLATES.iter().map(|(p, _)| p.to_string()).collect();
        built_in.sort();
        assert_eq!(built_in, prompts);
        let mut few: Vec<String> = FEW_SHOTS.iter().map(|(n, _)| n.to_string()).collect();
        few.sort();
        assert_eq!(few, files_under(&root.join("few_shots")));
        assert_eq!(tasks(), ["math", "qa"]);
        assert_eq!(template("prompts/qa/sft.jinja"), Some(include_str!("../../templates/prompts/qa/sft.jinja")));
        assert_eq!(few_shot("math_initial.json"), None);
    }
}
