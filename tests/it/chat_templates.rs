//! Chat templates rendered by stasc against the strings HF transformers' apply_chat_template produced for the same
//! tokenizer files and conversations (tests/fixtures/chat_templates/goldens.json, written by
//! scripts/make_chat_goldens.py). Every golden must match byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use stasc::prompt::chat_template::ChatTemplate;
use stasc::prompt::ChatMessage;

#[derive(Deserialize)]
struct Goldens {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    template: String,
    conversation: String,
    add_generation_prompt: bool,
    /// Read as a minijinja value so that the payload keeps the key order transformers saw.
    vars: minijinja::Value,
    messages: Vec<ChatMessage>,
    expected: String,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates")
}

fn goldens() -> Goldens {
    let text = std::fs::read_to_string(fixtures().join("goldens.json")).expect("goldens.json is committed");
    serde_json::from_str(&text).expect("goldens.json parses")
}

fn load(template: &str) -> ChatTemplate {
    let path = fixtures().join(template).join("tokenizer_config.json");
    ChatTemplate::from_tokenizer_config(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_golden_matches_transformers_byte_for_byte() {
    let goldens = goldens();
    let mut templates: BTreeMap<String, ChatTemplate> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in &goldens.cases {
        let template = templates.entry(case.template.clone()).or_insert_with(|| load(&case.template));
        let label =
            format!("{} / {} / add_generation_prompt={}", case.template, case.conversation, case.add_generation_prompt);
        match template.render_with_vars(&case.messages, case.add_generation_prompt, &case.vars) {
            Ok(got) if got == case.expected => {}
            Ok(got) => failures.push(format!("{label}:\n  expected {:?}\n  got      {:?}", case.expected, got)),
            Err(e) => failures.push(format!("{label}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} goldens differ:\n{}",
        failures.len(),
        goldens.cases.len(),
        failures.join("\n")
    );
}

#[test]
fn goldens_cover_the_models_the_paper_and_demo_use() {
    let goldens = goldens();
    let covered: BTreeSet<(&str, bool, bool)> = goldens
        .cases
        .iter()
        .map(|c| (c.template.as_str(), c.messages[0].role == "system", c.add_generation_prompt))
        .collect();
    for template in [
        "qwen2.5-instruct",
        "smollm2-135m-instruct",
        "llama-3.2-3b-instruct",
        "phi-3-mini-4k-instruct",
        "phi-3.5-mini-instruct",
    ] {
        for with_system in [false, true] {
            for generation_prompt in [false, true] {
                assert!(
                    covered.contains(&(template, with_system, generation_prompt)),
                    "{template} {with_system} {generation_prompt}"
                );
            }
        }
    }
}

#[test]
fn model_templates_print_their_own_tokens() {
    let qwen = load("qwen2.5-instruct");
    assert_eq!(qwen.eos_token(), Some("<|im_end|>"));
    assert_eq!(qwen.bos_token(), None);
    let smol = load("smollm2-135m-instruct");
    assert_eq!((smol.bos_token(), smol.eos_token()), (Some("<|im_start|>"), Some("<|im_end|>")));
    let phi = load("phi-3.5-mini-instruct");
    assert_eq!(phi.eos_token(), Some("<|endoftext|>"), "AddedToken objects give their content");
    let rendered = phi.render(&[ChatMessage::new("user", "Hi")], false).unwrap();
    assert_eq!(rendered, "<|user|>\nHi<|end|>\n<|endoftext|>");
}

#[test]
fn llama_template_prints_todays_date_without_date_string() {
    let llama = load("llama-3.2-3b-instruct");
    let rendered = llama.render(&[ChatMessage::new("user", "Hi")], true).unwrap();
    let date = regex::Regex::new(r"\nToday Date: \d{2} [A-Z][a-z]{2} \d{4}\n\n").unwrap();
    assert!(date.is_match(&rendered), "{rendered}");
}

#[test]
fn stasc_prompts_render_through_a_model_template() {
    use stasc::prompt::{PromptBuilder, DEFAULT_TEMPLATE_DIR};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let no_shots = tempfile::tempdir().unwrap();
    let builder = PromptBuilder::load(Some(&root.join(DEFAULT_TEMPLATE_DIR)), Some(no_shots.path()), "qa").unwrap();
    let smol = load("smollm2-135m-instruct");

    let prompt =
        smol.render(&builder.correction_messages("who wrote hamlet", "Final Answer: Marlowe").unwrap(), true).unwrap();
    // SmolLM2's template adds its default system turn when the chat has none, as transformers does.
    assert!(prompt.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"), "{prompt}");
    assert!(prompt.contains("<|im_start|>assistant\nFinal Answer: Marlowe<|im_end|>\n<|im_start|>user\n"), "{prompt}");
    assert!(
        prompt.ends_with("Final Answer: <the answer alone, in a few words><|im_end|>\n<|im_start|>assistant\n"),
        "{prompt}"
    );

    // The SFT text is the correction prompt followed by the correction and its end-of-turn token.
    let sft = smol
        .render(
            &builder.sft_messages("who wrote hamlet", "Final Answer: Marlowe", "Final Answer: Shakespeare").unwrap(),
            false,
        )
        .unwrap();
    assert_eq!(sft, format!("{prompt}Final Answer: Shakespeare<|im_end|>\n"));
}
