//! Task prompts of the STaSC loop, built from editable minijinja templates: for a task `T`,
//! `<template_dir>/prompts/T/initial.jinja`, `correction.jinja` and `sft.jinja` each set a variable `messages`, the
//! message list of that stage, from the question, the answers and the few-shot messages of
//! `<few_shot_dir>/T_initial.json` and `T_correction.json`. Templates may `{% import %}` other files of their task
//! directory (the shipped ones share their texts through `texts.jinja`), so a user edits prompt texts without
//! recompiling; templates/prompts/README.md documents the variables. With no `template_dir` / `few_shot_dir` the
//! built-in copies of the shipped files are used ([`super::builtin`]).

use std::path::{Path, PathBuf};

use minijinja::value::ValueKind;
use minijinja::{path_loader, AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};

use super::few_shot::{load_few_shots, FewShotKind};
use super::{builtin, ChatMessage, PromptError, ROLES};

/// The clone's template directory (it holds `prompts/<task>/`), which the built-in templates are made from.
pub const DEFAULT_TEMPLATE_DIR: &str = "templates";
/// The clone's few-shot directory (the reference's `few_shot_dir`), which the built-in few-shot files are made from.
pub const DEFAULT_FEW_SHOT_DIR: &str = "few_shots";

/// The three message lists a task defines, one template each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Initial,
    Correction,
    Sft,
}

impl Stage {
    const ALL: [Stage; 3] = [Stage::Initial, Stage::Correction, Stage::Sft];

    fn file_name(self) -> &'static str {
        match self {
            Stage::Initial => "initial.jinja",
            Stage::Correction => "correction.jinja",
            Stage::Sft => "sft.jinja",
        }
    }
}

/// Builds the initial, correction and SFT message lists of one task.
#[derive(Debug)]
pub struct PromptBuilder {
    task: String,
    task_dir: PathBuf,
    env: Environment<'static>,
    initial_few_shots: Vec<ChatMessage>,
    correction_few_shots: Vec<ChatMessage>,
}

impl PromptBuilder {
    /// Loads the templates of `task` from `<template_dir>/prompts/<task>/` and its few-shot files from
    /// `few_shot_dir` (each `None`: the built-in files), then renders each template once with sample text so that a
    /// broken template fails here, not in the middle of a run.
    pub fn load(
        template_dir: Option<&Path>,
        few_shot_dir: Option<&Path>,
        task: &str,
    ) -> Result<PromptBuilder, PromptError> {
        let plain_name = !task.is_empty() && task.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let (prompts_dir, known) = match template_dir {
            Some(dir) => {
                let prompts_dir = dir.join("prompts");
                let known = prompts_dir.join(task).is_dir();
                (prompts_dir, known)
            }
            None => (builtin::label("prompts"), builtin::tasks().iter().any(|t| t == task)),
        };
        let task_dir = prompts_dir.join(task);
        if !plain_name || !known {
            let tasks = match template_dir {
                Some(_) => available_tasks(&prompts_dir),
                None => builtin::tasks(),
            };
            let available = match tasks {
                tasks if tasks.is_empty() => "there are none".to_string(),
                tasks => format!("tasks there: {}", tasks.join(", ")),
            };
            return Err(PromptError::UnknownTask { dir: prompts_dir, task: task.to_string(), available });
        }

        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // A misspelt variable is an error, not an empty string in every prompt of a run.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        match template_dir {
            Some(_) => env.set_loader(path_loader(&task_dir)),
            None => {
                let task = task.to_string();
                env.set_loader(move |name| Ok(builtin::template(&format!("prompts/{task}/{name}")).map(str::to_string)))
            }
        }
        for role in ROLES {
            env.add_function(role, move |content: String| Value::from_serialize(ChatMessage::new(role, content)));
        }
        for stage in Stage::ALL {
            let path = task_dir.join(stage.file_name());
            if let Err(e) = env.get_template(stage.file_name()) {
                return Err(if e.kind() == ErrorKind::TemplateNotFound {
                    PromptError::MissingTemplate {
                        path,
                        hint: " (a task directory needs initial.jinja, correction.jinja and sft.jinja)".to_string(),
                    }
                } else {
                    PromptError::TemplateSyntax { name: path.display().to_string(), message: e.to_string() }
                });
            }
        }

        let builder = PromptBuilder {
            task: task.to_string(),
            task_dir,
            env,
            initial_few_shots: load_few_shots(few_shot_dir, task, FewShotKind::Initial)?,
            correction_few_shots: load_few_shots(few_shot_dir, task, FewShotKind::Correction)?,
        };
        builder.sft_messages("Sample question?", "Sample initial answer.", "Sample correction.")?;
        builder.correction_messages("Sample question?", "Sample initial answer.")?;
        builder.initial_messages("Sample question?")?;
        Ok(builder)
    }

    /// The same prompts with no few-shot messages (zero-shot), whatever the few-shot files hold.
    pub fn without_few_shots(mut self) -> PromptBuilder {
        self.initial_few_shots.clear();
        self.correction_few_shots.clear();
        self
    }

    /// The task these prompts are for (e.g. "qa" or "math").
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The directory the templates are read from (`<built-in>/prompts/<task>` for the built-in ones).
    pub fn task_dir(&self) -> &Path {
        &self.task_dir
    }

    /// The few-shot messages of the initial prompt (empty when the file is missing).
    pub fn initial_few_shots(&self) -> &[ChatMessage] {
        &self.initial_few_shots
    }

    /// The few-shot messages of the correction prompt (empty when the file is missing).
    pub fn correction_few_shots(&self) -> &[ChatMessage] {
        &self.correction_few_shots
    }

    /// The chat that asks the model for its first answer to `question`; it ends with a user message.
    pub fn initial_messages(&self, question: &str) -> Result<Vec<ChatMessage>, PromptError> {
        self.render(Stage::Initial, question, None, None)
    }

    /// The chat that asks the model to correct `initial_answer`; it ends with a user message.
    pub fn correction_messages(&self, question: &str, initial_answer: &str) -> Result<Vec<ChatMessage>, PromptError> {
        self.render(Stage::Correction, question, Some(initial_answer), None)
    }

    /// The SFT conversation for a kept (initial answer, correction) pair; its last message is the assistant's
    /// `correction`, the only part the loss covers.
    pub fn sft_messages(
        &self,
        question: &str,
        initial_answer: &str,
        correction: &str,
    ) -> Result<Vec<ChatMessage>, PromptError> {
        self.render(Stage::Sft, question, Some(initial_answer), Some(correction))
    }

    fn render(
        &self,
        stage: Stage,
        question: &str,
        initial_answer: Option<&str>,
        correction: Option<&str>,
    ) -> Result<Vec<ChatMessage>, PromptError> {
        let path = self.task_dir.join(stage.file_name());
        let mut ctx = vec![
            ("task", Value::from(self.task.as_str())),
            ("question", Value::from(question)),
            ("initial_few_shots", Value::from_serialize(&self.initial_few_shots)),
            ("correction_few_shots", Value::from_serialize(&self.correction_few_shots)),
        ];
        if let Some(initial_answer) = initial_answer {
            ctx.push(("initial_answer", Value::from(initial_answer)));
        }
        if let Some(correction) = correction {
            ctx.push(("correction", Value::from(correction)));
        }
        let render_error =
            |e: minijinja::Error| PromptError::Render { name: path.display().to_string(), message: e.to_string() };
        let template = self.env.get_template(stage.file_name()).map_err(render_error)?;
        let captured = template.render_captured(Value::from_iter(ctx)).map_err(render_error)?;
        let bad = |reason: String| PromptError::BadMessages { path: path.clone(), reason };
        if !captured.output().trim().is_empty() {
            return Err(bad(
                "it prints text outside {% set %} blocks; put message texts in {% set %} blocks and the list in `messages`"
                    .to_string(),
            ));
        }
        let value = captured.state().lookup("messages").filter(|v| !v.is_undefined()).ok_or_else(|| {
            bad("it does not set `messages` (expected {% set messages = [user(...), ...] %})".to_string())
        })?;
        let messages = to_messages(&value).map_err(bad)?;
        check_stage(stage, &messages, correction).map_err(bad)?;
        Ok(messages)
    }
}

/// The task directories under `prompts_dir`, sorted.
fn available_tasks(prompts_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(prompts_dir) else {
        return Vec::new();
    };
    let mut tasks: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    tasks.sort();
    tasks
}

/// Reads a template's `messages` value: a list of maps with string `role` and `content`.
fn to_messages(value: &Value) -> Result<Vec<ChatMessage>, String> {
    // `[a] + few_shots + [b]` is a lazily concatenated iterable in minijinja, not a plain list.
    if !matches!(value.kind(), ValueKind::Seq | ValueKind::Iterable) {
        return Err(format!("`messages` is a {}, expected a list of messages", value.kind()));
    }
    let items = value.try_iter().map_err(|e| format!("`messages` cannot be read: {e}"))?;
    let mut messages = Vec::new();
    for (i, item) in items.enumerate() {
        let field = |name: &str| item.get_attr(name).ok().and_then(|v| v.as_str().map(str::to_string));
        let (Some(role), Some(content)) = (field("role"), field("content")) else {
            return Err(format!("messages[{i}] is not a message with string `role` and `content` (build it with user(...), assistant(...) or system(...))"));
        };
        if !ROLES.contains(&role.as_str()) {
            return Err(format!("messages[{i}] has role \"{role}\", expected one of {}", ROLES.join(", ")));
        }
        messages.push(ChatMessage { role, content });
    }
    Ok(messages)
}

/// What the loop relies on: prompts end with the user's turn; SFT ends with the unchanged correction.
fn check_stage(stage: Stage, messages: &[ChatMessage], correction: Option<&str>) -> Result<(), String> {
    let Some(last) = messages.last() else {
        return Err("`messages` is empty".to_string());
    };
    match stage {
        Stage::Initial | Stage::Correction if last.role != "user" => {
            Err(format!("the last message must be the user's (the model answers it), found \"{}\"", last.role))
        }
        Stage::Sft if last.role != "assistant" || Some(last.content.as_str()) != correction => {
            Err("the last message must be assistant(correction), the correction unchanged".to_string())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
