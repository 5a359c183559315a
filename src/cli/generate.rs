//! `stasc generate`: sample completions from an HF model directory for one prompt (wrapped in the model's chat
//! template unless `--raw`) or for the conversations of a JSON file, and print them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::generate::{generate, GenerateOptions, GenerationRequest, PromptInput, PromptOverflow, Sampling, StopRules};
use crate::model::{load_model, DtypeSpec, LoadOptions, ModelDevice};
use crate::prompt::ChatMessage;

/// Sample completions from a model. Sampling defaults come from the model's generation_config.json when it has
/// them (temperature 1, no top-p/top-k otherwise); `--temperature 0` is greedy.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "chat_json"])))]
pub struct Args {
    /// HF model directory (config.json, safetensors, tokenizer.json, tokenizer_config.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt text, sent as one user message through the chat template (see --raw).
    #[arg(long)]
    pub prompt: Option<String>,
    /// JSON file with a conversation (a list of {"role", "content"} messages) or a list of conversations; each is
    /// rendered with the chat template and a generation prompt.
    #[arg(long)]
    pub chat_json: Option<PathBuf>,
    /// Use --prompt as raw text: no chat template.
    #[arg(long, requires = "prompt")]
    pub raw: bool,
    /// Samples per prompt.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// Sampling temperature; 0 means greedy.
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass in (0, 1]; 1 disables it.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Keep only the K most likely tokens; 0 disables it.
    #[arg(long)]
    pub top_k: Option<i64>,
    /// Most tokens generated per sample.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Run seed; each sample's seed derives from it, the prompt index and the sample index.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the text contains this string (repeatable); the text is cut before it.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Longest prompt + completion in tokens (default: the model's context).
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// Drop tokens from the start of over-long prompts instead of failing.
    #[arg(long)]
    pub truncate: bool,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: ModelDevice,
    /// auto (bf16 on CUDA, f32 on CPU), f32, bf16 or f16.
    #[arg(long, default_value = "auto")]
    pub dtype: DtypeSpec,
    /// Print one JSON object per completion instead of text.
    #[arg(long)]
    pub json: bool,
    /// No progress bar or summary on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Reads --chat-json: one conversation or a list of them.
fn read_conversations(path: &PathBuf) -> anyhow::Result<Vec<Vec<ChatMessage>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let parse = |v: serde_json::Value| serde_json::from_value::<Vec<ChatMessage>>(v);
    let conversations = match &value {
        serde_json::Value::Array(items) if items.iter().all(|i| i.is_array()) && !items.is_empty() => {
            items.iter().map(|i| parse(i.clone())).collect::<Result<Vec<_>, _>>()
        }
        _ => parse(value).map(|c| vec![c]),
    }
    .with_context(|| {
        format!("{}: expected a list of {{\"role\", \"content\"}} messages, or a list of such lists", path.display())
    })?;
    if conversations.iter().any(Vec::is_empty) {
        bail!("{}: a conversation has no messages", path.display());
    }
    Ok(conversations)
}

/// Loads the model, generates and prints the completions.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.quiet {
        crate::progress::set_enabled(false);
    }
    let opts =
        LoadOptions { device: args.device, dtype: args.dtype, max_model_len: args.max_model_len.map(|n| n as i64) };
    let loaded = load_model(&args.model, &opts).with_context(|| format!("loading {}", args.model.display()))?;
    let tok = &loaded.tokenizer;
    let texts: Vec<String> = match (&args.prompt, &args.chat_json) {
        (Some(p), _) if args.raw => vec![p.clone()],
        (Some(p), _) => vec![tok.apply_chat_template(&[ChatMessage::new("user", p.as_str())], true)?],
        (None, Some(path)) => {
            read_conversations(path)?.iter().map(|c| tok.apply_chat_template(c, true)).collect::<Result<_, _>>()?
        }
        (None, None) => bail!("give --prompt or --chat-json"),
    };
    // A raw prompt is plain text, so the tokenizer adds its special tokens; a templated one already holds them.
    let add_special = args.raw;
    let prompts = texts
        .iter()
        .enumerate()
        .map(|(i, t)| Ok(PromptInput { id: i as u64, token_ids: tok.encode(t, add_special)? }))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let defaults = &loaded.generation_config;
    let temperature = match (args.temperature, defaults.do_sample) {
        (Some(t), _) => t,
        (None, Some(false)) => 0.0,
        (None, _) => defaults.temperature.unwrap_or(1.0),
    };
    let sampling = Sampling::from_params(temperature, args.top_p.or(defaults.top_p), args.top_k.or(defaults.top_k))?;
    if !args.quiet {
        eprintln!("sampling: {sampling:?}, eos ids {:?}", tok.eos_token_ids());
    }
    let request = GenerationRequest {
        prompts,
        n: args.n,
        n_per_prompt: None,
        sampling,
        max_tokens: args.max_tokens,
        stop: StopRules {
            eos_token_ids: tok.eos_token_ids().to_vec(),
            stop_strings: args.stop.clone(),
            ignore_eos: false,
        },
        seed: args.seed,
        prompt_overflow: if args.truncate { PromptOverflow::TruncateLeft } else { PromptOverflow::Error },
    };
    let options = GenerateOptions {
        max_model_len: args.max_model_len,
        progress: !args.quiet,
        ..GenerateOptions::for_device(loaded.model.device())
    };
    let out = generate(&loaded.model, tok, &request, &options)?;
    for p in &out.prompts {
        if p.truncated_tokens > 0 {
            eprintln!("prompt {}: dropped its first {} tokens to fit", p.prompt_id, p.truncated_tokens);
        }
        for (i, s) in p.samples.iter().enumerate() {
            if args.json {
                let line = serde_json::json!({
                    "prompt": p.prompt_id, "sample": i, "seed": s.seed, "text": s.text,
                    "token_ids": s.token_ids, "finish_reason": s.finish_reason.to_string(),
                });
                println!("{line}");
            } else {
                println!(
                    "--- prompt {}, sample {i} (seed {}, {} tokens, finished: {}) ---",
                    p.prompt_id,
                    s.seed,
                    s.token_ids.len(),
                    s.finish_reason
                );
                println!("{}", s.text);
            }
        }
    }
    if !args.quiet {
        eprintln!(
            "{} tokens in {:.2}s ({:.1} tok/s)",
            out.stats.generated_tokens,
            out.stats.elapsed_s,
            out.stats.tokens_per_s()
        );
    }
    Ok(ExitCode::SUCCESS)
}
