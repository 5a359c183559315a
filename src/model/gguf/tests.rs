//! End-to-end unit tests of `import_gguf` on tiny synthetic llama GGUF files built in memory: the written files,
//! the Q/K un-permutation as stored, the tokenizer, and the all-or-nothing behaviour on bad input.

use std::path::{Path, PathBuf};

use super::llama::{permute_rows, unpermute_rows};
use super::test_gguf::{gguf_string, kv, Builder};
use super::*;

const HIDDEN: u64 = 32;
const HEADS: u64 = 2;
const KV_HEADS: u64 = 1;
const HEAD_DIM: u64 = 16;
const FF: u64 = 32;

const TOKENS: [&str; 7] = ["<|end|>", "a", "b", "Ġ", "ab", "Ġab", "<think>"];
const TOKEN_TYPES: [i32; 7] = [3, 1, 1, 1, 1, 1, 4];
const MERGES: [&str; 2] = ["a b", "Ġ ab"];

fn string_array(items: &[&str]) -> Vec<u8> {
    let mut out = 8u32.to_le_bytes().to_vec();
    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
    for item in items {
        out.extend_from_slice(&gguf_string(item));
    }
    out
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Values 0, 1, 2, ... scaled, so every element is distinguishable after reordering.
fn ramp(n: u64, scale: f32) -> Vec<f32> {
    (0..n).map(|i| i as f32 * scale).collect()
}

/// Q4_1 blocks with scale 0.5, minimum -1 and nibbles counting up.
fn q4_1_bytes(elements: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for block in 0..elements / 32 {
        out.extend_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        out.extend_from_slice(&half::f16::from_f32(-1.0).to_le_bytes());
        out.extend((0..16u8).map(|j| ((j + block as u8) % 16) | ((15 - j) << 4)));
    }
    out
}

/// A one-layer llama GGUF; `edit` may change the builder before it is serialised.
fn tiny_llama(dir: &Path, edit: impl FnOnce(&mut Builder)) -> PathBuf {
    let mut b = Builder::new();
    let u32_kv = |k: &str, v: u32| kv(k, 4, &v.to_le_bytes());
    b.kvs.push(kv("general.architecture", 8, &gguf_string("llama")));
    b.kvs.push(kv("general.name", 8, &gguf_string("tiny")));
    b.kvs.push(u32_kv("llama.context_length", 64));
    b.kvs.push(u32_kv("llama.embedding_length", HIDDEN as u32));
    b.kvs.push(u32_kv("llama.feed_forward_length", FF as u32));
    b.kvs.push(u32_kv("llama.block_count", 1));
    b.kvs.push(u32_kv("llama.attention.head_count", HEADS as u32));
    b.kvs.push(u32_kv("llama.attention.head_count_kv", KV_HEADS as u32));
    b.kvs.push(u32_kv("llama.rope.dimension_count", HEAD_DIM as u32));
    b.kvs.push(kv("llama.rope.freq_base", 6, &10000f32.to_le_bytes()));
    b.kvs.push(kv("llama.attention.layer_norm_rms_epsilon", 6, &1e-6f32.to_le_bytes()));
    b.kvs.push(kv("tokenizer.ggml.model", 8, &gguf_string("gpt2")));
    b.kvs.push(kv("tokenizer.ggml.pre", 8, &gguf_string("smollm")));
    b.kvs.push(kv("tokenizer.ggml.tokens", 9, &string_array(&TOKENS)));
    let mut types = 5u32.to_le_bytes().to_vec();
    types.extend_from_slice(&(TOKEN_TYPES.len() as u64).to_le_bytes());
    types.extend(TOKEN_TYPES.iter().flat_map(|t| t.to_le_bytes()));
    b.kvs.push(kv("tokenizer.ggml.token_type", 9, &types));
    b.kvs.push(kv("tokenizer.ggml.merges", 9, &string_array(&MERGES)));
    b.kvs.push(u32_kv("tokenizer.ggml.bos_token_id", 0));
    b.kvs.push(u32_kv("tokenizer.ggml.eos_token_id", 0));
    b.kvs.push(kv("tokenizer.chat_template", 8, &gguf_string("{{ messages[0]['content'] }}")));

    let vocab = TOKENS.len() as u64;
    let q_rows = HEADS * HEAD_DIM;
    let kv_rows = KV_HEADS * HEAD_DIM;
    let f32_tensor = |name: &str, dims: Vec<u64>, scale: f32| {
        let n = dims.iter().product();
        (name.to_string(), dims, 0u32, f32_bytes(&ramp(n, scale)))
    };
    // llama.cpp stores Q and K permuted; the fixture does the same to the ramp so import must give the ramp back.
    let permuted = |name: &str, rows: u64, heads: u64| {
        let values = permute_rows(&ramp(rows * HIDDEN, 0.01), rows as usize, heads as usize);
        (name.to_string(), vec![HIDDEN, rows], 0u32, f32_bytes(&values))
    };
    b.tensors = vec![
        f32_tensor("token_embd.weight", vec![HIDDEN, vocab], 0.001),
        f32_tensor("output_norm.weight", vec![HIDDEN], 1.0),
        f32_tensor("blk.0.attn_norm.weight", vec![HIDDEN], 1.0),
        f32_tensor("blk.0.ffn_norm.weight", vec![HIDDEN], 1.0),
        permuted("blk.0.attn_q.weight", q_rows, HEADS),
        permuted("blk.0.attn_k.weight", kv_rows, KV_HEADS),
        f32_tensor("blk.0.attn_v.weight", vec![HIDDEN, kv_rows], 0.01),
        f32_tensor("blk.0.attn_output.weight", vec![q_rows, HIDDEN], 0.01),
        ("blk.0.ffn_gate.weight".into(), vec![HIDDEN, FF], 3, q4_1_bytes(HIDDEN * FF)),
        f32_tensor("blk.0.ffn_up.weight", vec![HIDDEN, FF], 0.01),
        f32_tensor("blk.0.ffn_down.weight", vec![FF, HIDDEN], 0.01),
    ];
    edit(&mut b);
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, b.build()).unwrap();
    path
}

fn read_f32(st: &safetensors::SafeTensors<'_>, name: &str) -> Vec<f32> {
    let view = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn imports_a_tiny_llama() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = tiny_llama(dir.path(), |_| {});
    let out = dir.path().join("out");
    let summary = import_gguf(&gguf, &out, &ImportOptions::default()).unwrap();
    assert_eq!(summary.tensor_count, 11);
    assert!(summary.tie_word_embeddings);
    assert_eq!(summary.source_types.get("Q4_1"), Some(&1));

    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names.len(), 11);
    assert!(!names.iter().any(|n| n.contains("lm_head")));
    assert_eq!(read_f32(&st, "model.layers.0.self_attn.q_proj.weight"), ramp(HEADS * HEAD_DIM * HIDDEN, 0.01));
    assert_eq!(read_f32(&st, "model.layers.0.self_attn.k_proj.weight"), ramp(KV_HEADS * HEAD_DIM * HIDDEN, 0.01));
    assert_eq!(st.tensor("model.embed_tokens.weight").unwrap().shape(), &[TOKENS.len(), HIDDEN as usize]);
    assert_eq!(st.tensor("model.layers.0.mlp.down_proj.weight").unwrap().shape(), &[HIDDEN as usize, FF as usize]);
    let gate = read_f32(&st, "model.layers.0.mlp.gate_proj.weight");
    assert_eq!(&gate[..3], &[-1.0, -0.5, 0.0]); // nibbles 0, 1, 2 of block 0: q * 0.5 - 1
    assert_eq!(gate[16], 15.0 * 0.5 - 1.0); // high nibble of byte 0 is element 16

    let config = read_json(&out.join("config.json"));
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["num_key_value_heads"], 1);
    assert_eq!(config["head_dim"], 16);
    assert_eq!(config["rms_norm_eps"], 1e-6);
    assert_eq!(config["vocab_size"], TOKENS.len());
    assert_eq!(config["tie_word_embeddings"], true);
    let tok_config = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(tok_config["chat_template"], "{{ messages[0]['content'] }}");
    assert_eq!(tok_config["eos_token"], "<|end|>");
    assert_eq!(tok_config["added_tokens_decoder"]["6"]["special"], false);

    let tokenizer = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let ids = tokenizer.encode("ab ab<|end|><think>", false).unwrap().get_ids().to_vec();
    assert_eq!(ids, vec![4, 5, 0, 6]);
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), "ab ab<|end|><think>");
}

#[test]
fn bf16_output_halves_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = tiny_llama(dir.path(), |_| {});
    let out = dir.path().join("out");
    import_gguf(&gguf, &out, &ImportOptions { dtype: OutputDtype::Bf16, force: false }).unwrap();
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let norm = st.tensor("model.norm.weight").unwrap();
    assert_eq!(norm.dtype(), safetensors::Dtype::BF16);
    assert_eq!(half::bf16::from_le_bytes([norm.data()[6], norm.data()[7]]).to_f32(), 3.0);
    assert_eq!(read_json(&out.join("config.json"))["torch_dtype"], "bfloat16");
}

/// Asserts that nothing but the GGUF is left in `dir` (no output, no staging directory).
fn assert_nothing_written(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("tiny.gguf")]);
}

#[test]
fn unsupported_tensor_type_names_type_and_tensor_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = tiny_llama(dir.path(), |b| {
        let down = b.tensors.iter_mut().find(|t| t.0 == "blk.0.ffn_down.weight").unwrap();
        down.2 = 12; // Q4_K
        down.3 = vec![0; 144 * 4];
    });
    let err = import_gguf(&gguf, &dir.path().join("out"), &ImportOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("blk.0.ffn_down.weight") && msg.contains("Q4_K") && msg.contains("tiny.gguf"), "{msg}");
    assert_nothing_written(dir.path());
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_listed_together() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = tiny_llama(dir.path(), |b| {
        b.tensors.retain(|t| t.0 != "blk.0.attn_v.weight");
        b.tensors.push(("blk.0.ffn_gate_exps.weight".into(), vec![4], 0, vec![0; 16]));
        let up = b.tensors.iter_mut().find(|t| t.0 == "blk.0.ffn_up.weight").unwrap();
        up.1 = vec![HIDDEN, FF / 2];
        up.3.truncate(up.3.len() / 2);
    });
    let msg = import_gguf(&gguf, &dir.path().join("out"), &ImportOptions::default()).unwrap_err().to_string();
    assert!(msg.contains("missing tensor \"blk.0.attn_v.weight\""), "{msg}");
    assert!(msg.contains("unexpected tensor \"blk.0.ffn_gate_exps.weight\""), "{msg}");
    assert!(msg.contains("\"blk.0.ffn_up.weight\" has shape [16, 32], expected [32, 32]"), "{msg}");
    assert_nothing_written(dir.path());
}

#[test]
fn refuses_existing_output_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = tiny_llama(dir.path(), |_| {});
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let err = import_gguf(&gguf, &out, &ImportOptions::default()).unwrap_err();
    assert!(matches!(err, GgufError::OutputExists { .. }), "{err}");
    assert!(out.join("keep.txt").exists());
    import_gguf(&gguf, &out, &ImportOptions { force: true, ..Default::default() }).unwrap();
    assert!(!out.join("keep.txt").exists());
    assert!(out.join("model.safetensors").exists());
}

#[test]
fn rejects_other_architectures_and_unknown_pre_tokenizers() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = tiny_llama(dir.path(), |b| b.kvs[0] = kv("general.architecture", 8, &gguf_string("qwen2")));
    let msg = import_gguf(&gguf, &dir.path().join("out"), &ImportOptions::default()).unwrap_err().to_string();
    assert!(msg.contains("architecture \"qwen2\"") && msg.contains("supported: llama"), "{msg}");

    let gguf = tiny_llama(dir.path(), |b| {
        let pre = b.kvs.iter_mut().find(|k| k.starts_with(&gguf_string("tokenizer.ggml.pre"))).unwrap();
        *pre = kv("tokenizer.ggml.pre", 8, &gguf_string("mystery"));
    });
    let msg = import_gguf(&gguf, &dir.path().join("out"), &ImportOptions::default()).unwrap_err().to_string();
    assert!(msg.contains("tokenizer.ggml.pre \"mystery\" is not supported"), "{msg}");
    assert_nothing_written(dir.path());
}

#[test]
fn unpermute_is_what_the_fixture_permutation_needs() {
    // Guards the fixture itself: permuted data differs from the ramp, so the import test above can fail.
    let ramp = ramp(HEADS * HEAD_DIM * HIDDEN, 1.0);
    let permuted = permute_rows(&ramp, (HEADS * HEAD_DIM) as usize, HEADS as usize);
    assert_ne!(permuted, ramp);
    assert_eq!(unpermute_rows(&permuted, (HEADS * HEAD_DIM) as usize, HEADS as usize), ramp);
}

#[test]
fn failure_while_writing_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = tiny_llama(dir.path(), |_| {});
    // Cut the last tensor's data short: parsing succeeds, dequantising it fails mid-import.
    let bytes = std::fs::read(&gguf).unwrap();
    std::fs::write(&gguf, &bytes[..bytes.len() - 8]).unwrap();
    let err = import_gguf(&gguf, &dir.path().join("out"), &ImportOptions::default()).unwrap_err();
    assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
    assert_nothing_written(dir.path());
}
