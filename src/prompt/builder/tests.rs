use std::path::{Path, PathBuf};

use super::*;

fn shipped() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    (root.join(DEFAULT_TEMPLATE_DIR), root.join(DEFAULT_FEW_SHOT_DIR))
}

fn roles(messages: &[ChatMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.role.as_str()).collect()
}

/// A template directory with one task whose files are given, for the override and error cases.
fn custom_task(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let task_dir = dir.path().join("prompts").join("custom");
    std::fs::create_dir_all(&task_dir).unwrap();
    for (name, text) in files {
        std::fs::write(task_dir.join(name), text).unwrap();
    }
    dir
}

const PLAIN_INITIAL: &str = "{% set messages = [user('Q: ' ~ question)] %}";
const PLAIN_CORRECTION: &str =
    "{% set messages = [user('Q: ' ~ question), assistant(initial_answer), user('Fix it.')] %}";
const PLAIN_SFT: &str =
    "{% set messages = [user('Q: ' ~ question), assistant(initial_answer), user('Fix it.'), assistant(correction)] %}";

#[test]
fn qa_prompts_follow_the_stasc_structure() {
    let (templates, few_shots) = shipped();
    let builder = PromptBuilder::load(Some(&templates), Some(&few_shots), "qa").unwrap();
    assert!(!builder.initial_few_shots().is_empty(), "few_shots/qa_initial.json is shipped");
    assert!(!builder.correction_few_shots().is_empty(), "few_shots/qa_correction.json is shipped");

    let question = "who wrote the novel moby dick";
    let initial = builder.initial_messages(question).unwrap();
    let n_init = builder.initial_few_shots().len();
    assert_eq!(initial.len(), n_init + 2);
    assert_eq!(initial[0].role, "user");
    assert!(initial[0].content.contains("Step-by-step reasoning:") && initial[0].content.contains("Final Answer:"));
    assert_eq!(&initial[1..=n_init], builder.initial_few_shots());
    let last = initial.last().unwrap();
    assert_eq!(last.role, "user");
    assert!(last.content.contains(question) && last.content.contains("Final Answer:"), "{}", last.content);

    let answer = "Step-by-step reasoning: ...\nFinal Answer: Herman Melville";
    let correction = builder.correction_messages(question, answer).unwrap();
    let n_corr = builder.correction_few_shots().len();
    assert_eq!(correction.len(), n_corr + 4);
    assert_eq!(correction[0], initial[0], "the correction chat starts with the same instruction");
    assert_eq!(&correction[1..=n_corr], builder.correction_few_shots());
    assert_eq!(roles(&correction[n_corr + 1..]), ["user", "assistant", "user"]);
    assert_eq!(correction[n_corr + 1], *initial.last().unwrap(), "the question reads as in the initial chat");
    assert_eq!(correction[n_corr + 2].content, answer);
    let request = &correction[n_corr + 3].content;
    assert!(request.contains("Step-by-step reasoning:") && request.contains("Final Answer:"), "{request}");

    // docs/stasc.md: [user: initial instruction, user: question, assistant: initial answer, user: correction
    // instruction, assistant: correction], the texts being those of the prompts.
    let fixed = "Step-by-step reasoning: Moby-Dick (1851) is by Herman Melville.\nFinal Answer: Herman Melville";
    let sft = builder.sft_messages(question, answer, fixed).unwrap();
    assert_eq!(roles(&sft), ["user", "user", "assistant", "user", "assistant"]);
    assert_eq!(sft[0], correction[0]);
    assert_eq!(sft[1..4], correction[n_corr + 1..]);
    assert_eq!(sft[4], ChatMessage::new("assistant", fixed));
}

#[test]
fn math_prompts_ask_for_a_boxed_answer() {
    let (templates, few_shots) = shipped();
    let builder = PromptBuilder::load(Some(&templates), Some(&few_shots), "math").unwrap();
    let question = "What is $1+2\\cdot 3$?";
    let initial = builder.initial_messages(question).unwrap();
    assert_eq!(initial.first().unwrap().role, "system");
    assert!(initial[0].content.contains("\\boxed{}"), "{}", initial[0].content);
    assert_eq!(*initial.last().unwrap(), ChatMessage::new("user", question));

    let correction = builder.correction_messages(question, "It is 9.").unwrap();
    let tail = &correction[correction.len() - 3..];
    assert_eq!(roles(tail), ["user", "assistant", "user"]);
    assert_eq!(tail[1].content, "It is 9.");
    assert!(tail[2].content.contains("\\boxed{}") && tail[2].content.contains("mistake"), "{}", tail[2].content);

    let sft = builder.sft_messages(question, "It is 9.", "$1+6=7$, so \\boxed{7}.").unwrap();
    assert_eq!(roles(&sft), ["system", "user", "assistant", "user", "assistant"]);
    assert_eq!(sft[0], initial[0]);
    assert_eq!(sft[4].content, "$1+6=7$, so \\boxed{7}.");
}

#[test]
fn missing_few_shot_files_mean_no_few_shot_messages() {
    let (templates, _) = shipped();
    let empty = tempfile::tempdir().unwrap();
    let builder = PromptBuilder::load(Some(&templates), Some(empty.path()), "qa").unwrap();
    assert!(builder.initial_few_shots().is_empty() && builder.correction_few_shots().is_empty());
    assert_eq!(roles(&builder.initial_messages("q").unwrap()), ["user", "user"]);
    assert_eq!(roles(&builder.correction_messages("q", "a").unwrap()), ["user", "user", "assistant", "user"]);
}

#[test]
fn few_shot_files_are_read_from_the_given_directory() {
    let (templates, _) = shipped();
    let dir = tempfile::tempdir().unwrap();
    let shots = r#"[{"role": "user", "content": "Question:\nsky colour?"}, {"role": "assistant", "content": "Final Answer: blue"}]"#;
    std::fs::write(dir.path().join("qa_initial.json"), shots).unwrap();
    let builder = PromptBuilder::load(Some(&templates), Some(dir.path()), "qa").unwrap();
    let initial = builder.initial_messages("q").unwrap();
    assert_eq!(roles(&initial), ["user", "user", "assistant", "user"]);
    assert_eq!(initial[2].content, "Final Answer: blue");
    assert!(builder.correction_few_shots().is_empty());
}

#[test]
fn malformed_few_shot_file_is_an_error_naming_it() {
    let (templates, _) = shipped();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qa_correction.json");
    std::fs::write(&path, r#"{"role": "user", "content": "not a list"}"#).unwrap();
    let err = PromptBuilder::load(Some(&templates), Some(dir.path()), "qa").unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()) && err.contains("not a list"), "{err}");
}

#[test]
fn a_user_template_directory_replaces_the_shipped_prompts() {
    let dir = custom_task(&[
        ("initial.jinja", PLAIN_INITIAL),
        ("correction.jinja", PLAIN_CORRECTION),
        ("sft.jinja", PLAIN_SFT),
    ]);
    let no_shots = tempfile::tempdir().unwrap();
    let builder = PromptBuilder::load(Some(dir.path()), Some(no_shots.path()), "custom").unwrap();
    assert_eq!(builder.task(), "custom");
    assert_eq!(builder.initial_messages("why?").unwrap(), vec![ChatMessage::new("user", "Q: why?")]);
    assert_eq!(
        builder.sft_messages("why?", "because", "because, indeed").unwrap(),
        vec![
            ChatMessage::new("user", "Q: why?"),
            ChatMessage::new("assistant", "because"),
            ChatMessage::new("user", "Fix it."),
            ChatMessage::new("assistant", "because, indeed"),
        ]
    );
}

#[test]
fn unknown_task_lists_the_tasks_there() {
    let (templates, few_shots) = shipped();
    for task in ["trivia", "../qa", ""] {
        let err = PromptBuilder::load(Some(&templates), Some(&few_shots), task).unwrap_err().to_string();
        assert!(err.contains(&format!("task '{task}'")) && err.contains("math, qa"), "{err}");
    }
}

#[test]
fn missing_or_broken_templates_are_errors_naming_the_file() {
    let no_shots = tempfile::tempdir().unwrap();
    let load = |files: &[(&str, &str)]| {
        let dir = custom_task(files);
        let err = PromptBuilder::load(Some(dir.path()), Some(no_shots.path()), "custom").unwrap_err().to_string();
        (dir, err)
    };
    let in_file = |dir: &tempfile::TempDir, name: &str| {
        dir.path().join("prompts").join("custom").join(name).display().to_string()
    };

    let (dir, err) = load(&[("initial.jinja", PLAIN_INITIAL), ("correction.jinja", PLAIN_CORRECTION)]);
    assert!(err.contains(&in_file(&dir, "sft.jinja")) && err.contains("missing"), "{err}");

    let (dir, err) = load(&[
        ("initial.jinja", "{% set messages = [user(question) %}"),
        ("correction.jinja", PLAIN_CORRECTION),
        ("sft.jinja", PLAIN_SFT),
    ]);
    assert!(err.contains(&in_file(&dir, "initial.jinja")) && err.contains("does not parse"), "{err}");

    let cases = [
        ("{% set messages = [user(questoin)] %}", "undefined"),
        ("{% set msgs = [user(question)] %}", "does not set `messages`"),
        ("Hello {% set messages = [user(question)] %}", "prints text outside"),
        ("{% set messages = [user(question), assistant('a')] %}", "last message must be the user's"),
        ("{% set messages = [{'role': 'narrator', 'content': question}] %}", "role \"narrator\""),
        ("{% set messages = [question] %}", "messages[0] is not a message"),
        ("{% set messages = [] %}", "`messages` is empty"),
    ];
    for (initial, expected) in cases {
        let (dir, err) =
            load(&[("initial.jinja", initial), ("correction.jinja", PLAIN_CORRECTION), ("sft.jinja", PLAIN_SFT)]);
        assert!(err.contains(&in_file(&dir, "initial.jinja")) && err.contains(expected), "{initial}: {err}");
    }

    let altered = "{% set messages = [user(question), assistant(correction ~ '!')] %}";
    let (dir, err) =
        load(&[("initial.jinja", PLAIN_INITIAL), ("correction.jinja", PLAIN_CORRECTION), ("sft.jinja", altered)]);
    assert!(err.contains(&in_file(&dir, "sft.jinja")) && err.contains("the correction unchanged"), "{err}");
}

#[test]
fn shipped_few_shots_repeat_the_template_texts() {
    let (templates, few_shots) = shipped();
    let builder = PromptBuilder::load(Some(&templates), Some(&few_shots), "qa").unwrap();
    let correction = builder.correction_messages("QUESTION", "ANSWER").unwrap();
    let asked = &correction[correction.len() - 3].content;
    let request = &correction[correction.len() - 1].content;
    for shots in [builder.initial_few_shots(), builder.correction_few_shots()] {
        for message in shots.iter().filter(|m| m.role == "user" && m.content.starts_with("Question:")) {
            let question = message.content.lines().nth(1).unwrap();
            assert_eq!(message.content, asked.replace("QUESTION", question), "few-shot question block differs");
        }
    }
    let requests: Vec<_> = builder.correction_few_shots().iter().skip(2).step_by(4).collect();
    assert!(!requests.is_empty());
    for message in requests {
        assert_eq!(message.content, *request, "few-shot correction request differs from the template's");
    }
}

#[test]
fn without_directories_the_built_in_files_give_the_shipped_prompts() {
    let (templates, few_shots) = shipped();
    for task in ["qa", "math"] {
        let shipped = PromptBuilder::load(Some(&templates), Some(&few_shots), task).unwrap();
        let built_in = PromptBuilder::load(None, None, task).unwrap();
        let question = "What is 2 + 3?";
        assert_eq!(built_in.initial_messages(question).unwrap(), shipped.initial_messages(question).unwrap());
        assert_eq!(
            built_in.sft_messages(question, "4", "5").unwrap(),
            shipped.sft_messages(question, "4", "5").unwrap()
        );
        assert_eq!(built_in.task_dir(), Path::new(&format!("<built-in>/prompts/{task}")));
    }
    let err = PromptBuilder::load(None, None, "trivia").unwrap_err().to_string();
    assert_eq!(err, "no prompt templates for task 'trivia' in <built-in>/prompts (tasks there: math, qa)");
}
