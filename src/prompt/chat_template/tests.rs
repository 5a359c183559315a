use std::path::Path;

use super::*;

fn chat(pairs: &[(&str, &str)]) -> Vec<ChatMessage> {
    pairs.iter().map(|(role, content)| ChatMessage::new(*role, *content)).collect()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
                      {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

#[test]
fn renders_messages_with_tokens_and_generation_prompt() {
    let template = ChatTemplate::from_str(
        "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}\
         {% if add_generation_prompt %}[assistant]{% endif %}",
        Some("<s>".to_string()),
        Some("</s>".to_string()),
    )
    .unwrap();
    assert_eq!(template.bos_token(), Some("<s>"));
    assert_eq!(template.eos_token(), Some("</s>"));
    let messages = chat(&[("user", "Hi"), ("assistant", "Hello")]);
    assert_eq!(template.render(&messages, false).unwrap(), "<s>[user]Hi</s>[assistant]Hello</s>");
    assert_eq!(template.render(&messages, true).unwrap(), "<s>[user]Hi</s>[assistant]Hello</s>[assistant]");
}

#[test]
fn blocks_are_trimmed_like_transformers() {
    // trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before it, and the final
    // newline of the template is not kept.
    let template = ChatTemplate::from_str(
        "{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}\n",
        None,
        None,
    )
    .unwrap();
    assert_eq!(template.render(&chat(&[("user", "a"), ("user", "b")]), false).unwrap(), "a\nb\n");
}

#[test]
fn python_string_methods_and_transformers_globals_work() {
    // Booleans print as Jinja2 prints Python's: True/False.
    let template = ChatTemplate::from_str(
        "{{ messages[0].content.strip().upper() }}|{{ messages[0].content.split()|length }}|\
         {{ messages[0].content.strip().startswith('a') }}|{{ tools is none }}|{{ documents is none }}|\
         {{ messages[0] | tojson }}",
        None,
        None,
    )
    .unwrap();
    let out = template.render(&chat(&[("user", "  a b  ")]), false).unwrap();
    assert_eq!(out, "A B|2|True|True|True|{\"role\": \"user\", \"content\": \"  a b  \"}");
}

#[test]
fn raise_exception_stops_rendering_with_its_message() {
    let template = ChatTemplate::from_str(
        "{% if messages[0].role != 'user' %}{{ raise_exception('Conversations must start with a user turn') }}{% endif %}ok",
        None,
        None,
    )
    .unwrap();
    assert_eq!(template.render(&chat(&[("user", "x")]), false).unwrap(), "ok");
    let err = template.render(&chat(&[("assistant", "x")]), false).unwrap_err().to_string();
    assert!(err.contains("Conversations must start with a user turn"), "{err}");
    assert!(err.contains("<inline chat template>"), "{err}");
}

#[test]
fn strftime_now_prints_todays_date() {
    let template = ChatTemplate::from_str("{{ strftime_now('%d %b %Y') }}", None, None).unwrap();
    let out = template.render(&[], false).unwrap();
    let pattern = Regex::new(r"^\d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4}$").unwrap();
    assert!(pattern.is_match(&out), "{out:?}");
}

#[test]
fn extra_vars_reach_the_template_but_not_over_messages() {
    let template = ChatTemplate::from_str("{{ date_string }}|{{ messages|length }}", None, None).unwrap();
    let mut vars = serde_json::Map::new();
    vars.insert("date_string".to_string(), serde_json::json!("26 Jul 2024"));
    vars.insert("messages".to_string(), serde_json::json!([]));
    assert_eq!(template.render_with_vars(&chat(&[("user", "x")]), false, &vars).unwrap(), "26 Jul 2024|1");
}

#[test]
fn generation_tags_render_their_content() {
    let template = ChatTemplate::from_str(
        "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}\
         {% else %}{{ m.content }}{% endif %}{% endfor %}",
        None,
        None,
    )
    .unwrap();
    assert_eq!(template.render(&chat(&[("user", "q"), ("assistant", "a")]), false).unwrap(), "qa");
}

#[test]
fn syntax_error_names_the_template() {
    let err = ChatTemplate::from_str("{% for m in messages %}", None, None).unwrap_err();
    assert!(matches!(err, PromptError::TemplateSyntax { .. }), "{err:?}");
    assert!(err.to_string().contains("<inline chat template>"), "{err}");
}

#[test]
fn tokenizer_config_tokens_may_be_added_token_objects() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false, "normalized": false,
                      "rstrip": false, "single_word": false},
        "eos_token": "</s>",
        "pad_token": null,
        "unk_token": {"content": "<unk>"},
        "chat_template": "{{ bos_token }}{{ unk_token }}{{ pad_token is defined }}{{ messages[0].content }}{{ eos_token }}",
    });
    let path = write(dir.path(), "tokenizer_config.json", &config.to_string());
    let template = ChatTemplate::from_tokenizer_config(&path).unwrap();
    assert_eq!(template.bos_token(), Some("<s>"));
    assert_eq!(template.special_token("unk_token"), Some("<unk>"));
    assert_eq!(template.special_token("pad_token"), None);
    assert_eq!(template.render(&chat(&[("user", "x")]), false).unwrap(), "<s><unk>Falsex</s>");
}

#[test]
fn named_template_list_uses_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"chat_template": [
        {"name": "tool_use", "template": "tools"},
        {"name": "default", "template": "default:{{ messages[0].content }}"},
    ]});
    let path = write(dir.path(), "tokenizer_config.json", &config.to_string());
    let template = ChatTemplate::from_tokenizer_config(&path).unwrap();
    assert_eq!(template.render(&chat(&[("user", "x")]), false).unwrap(), "default:x");

    let config =
        serde_json::json!({"chat_template": [{"name": "rag", "template": "r"}, {"name": "tool_use", "template": "t"}]});
    write(dir.path(), "tokenizer_config.json", &config.to_string());
    let err = ChatTemplate::from_tokenizer_config(&path).unwrap_err().to_string();
    assert!(err.contains("no template named 'default' (found: rag, tool_use)"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn chat_template_jinja_beside_the_config_takes_priority() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "tokenizer_config.json", r#"{"eos_token": "<|im_end|>", "chat_template": "old"}"#);
    write(dir.path(), CHAT_TEMPLATE_FILE, CHATML);
    let template = ChatTemplate::from_tokenizer_config(&path).unwrap();
    assert_eq!(template.source(), CHATML);
    assert_eq!(
        template.render(&chat(&[("user", "x")]), true).unwrap(),
        "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn bad_tokenizer_configs_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("{\"eos_token\": \"</s>\"}", "no chat template"),
        ("{\"chat_template\": ", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("{\"chat_template\": 3}", "must be a string or a list"),
        ("{\"chat_template\": \"x\", \"eos_token\": 2}", "key 'eos_token' expected a string"),
        ("{\"chat_template\": \"{% if %}\"}", "does not parse"),
    ];
    for (text, expected) in cases {
        let path = write(dir.path(), "tokenizer_config.json", text);
        let err = ChatTemplate::from_tokenizer_config(&path).unwrap_err().to_string();
        assert!(err.contains(expected), "{text}: {err}");
        assert!(err.contains(&path.display().to_string()), "{text}: {err}");
    }
    let missing = dir.path().join("absent").join("tokenizer_config.json");
    let err = ChatTemplate::from_tokenizer_config(&missing).unwrap_err().to_string();
    assert!(err.contains("cannot read") && err.contains("absent"), "{err}");
}

#[test]
fn templates_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChatTemplate>();
    assert_send_sync::<crate::prompt::PromptBuilder>();
}
