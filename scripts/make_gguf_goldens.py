#!/usr/bin/env python3
"""Reference data for `stasc import-gguf`, produced by transformers' own GGUF loader.

Writes (small, committed; the Rust tests read them, CI never runs this script):
  tests/fixtures/smollm2/goldens.json     token ids, chat rendering, weight samples, logits, greedy answer, perplexity
  tests/fixtures/gguf/dequant_blocks.json random ggml blocks with gguf-py's dequantised values

Needs, in the stasc venv (not needed by CI):  pip install transformers gguf accelerate numpy
Run:  ~/.cache/stasc/venv/bin/python scripts/make_gguf_goldens.py [--gguf PATH] [--check-import HF_DIR]

Reference choices, stated once:
- The model is loaded with `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)` in float32 on CPU; transformers
  dequantises and undoes llama.cpp's Q/K permutation itself.
- Token ids: transformers builds this GGUF's tokenizer as plain GPT-2 byte-level BPE because it has no entry for
  `tokenizer.ggml.pre = "smollm"`. SmolLM2's own tokenizer.json, and llama.cpp's "smollm" pre-tokenizer, first isolate
  every number code point (`Digits(individual_digits=True)`) and then apply GPT-2's regex. The reference ids here use
  transformers' tokenizer with that pre-tokenizer restored; where plain transformers-from-GGUF gives other ids, they
  are recorded beside them (`transformers_gguf_ids`) so the difference is visible, not hidden.
"""

import argparse
import glob
import json
import math
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("STASC_CACHE", os.path.expanduser("~/.cache/stasc"))

TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog. It's 9:45 a.m., and we've got 3 hours left!",
    "multilingual": (
        "Café naïve résumé façade — Ångström. Größe über Straße. ¿Dónde está el niño? "
        "Привет, мир! Γειά σου κόσμε. 你好，世界！这是一个测试。日本語のテキスト、カタカナ。"
        "한국어 텍스트입니다. مرحبا بالعالم. नमस्ते दुनिया. "
        "Emoji: 😀👍🏽🇫🇷 ❤️ 👨‍👩‍👧 and a tab\there."
    ),
    "code": (
        "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n\n"
        "for i in range(10):\n\tprint(f\"{i:>3} -> {fib(i)}\")  # 0x1F, 1e-5, 3.14159\n"
    ),
    "numbers_and_spaces": "  123  4567 x² ½ ٣٤ 2024-11-25   trailing spaces   \n\n\n  indented\r\nCRLF",
    "special_tokens": "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\nHi!<|im_end|><|endoftext|>",
}

CONVERSATIONS = {
    "capital_question": [{"role": "user", "content": "What is the capital of France?"}],
    "with_system_and_turns": [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Name a primary colour."},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": "Another one?"},
    ],
}

LOGIT_PROMPT = "The capital of France is"

# Plain English written for this test (no outside source), ~150 words of ordinary prose.
PERPLEXITY_TEXT = (
    "Every morning the small town wakes up slowly. The baker is the first to open his shop, and the smell of fresh "
    "bread drifts down the main street. A little later the children walk to school in groups, talking about the "
    "games they played the day before. Their parents hurry to the train station, holding cups of coffee and "
    "checking the time. By nine o'clock the streets are quiet again. Old men sit on the bench near the fountain and "
    "read the newspaper, while the shopkeepers sweep the pavement in front of their doors. In the afternoon the "
    "market fills with people buying fruit, vegetables and flowers. When the sun begins to set, families gather "
    "for dinner and share the news of the day. Then the lights go out one by one, and the town falls asleep, "
    "ready to begin again tomorrow."
)

WEIGHT_TENSORS = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.0.self_attn.v_proj.weight",
    "model.layers.0.self_attn.o_proj.weight",
    "model.layers.0.mlp.down_proj.weight",
    "model.layers.0.input_layernorm.weight",
    "model.layers.29.self_attn.q_proj.weight",
    "model.layers.29.self_attn.k_proj.weight",
    "model.layers.29.mlp.gate_proj.weight",
    "model.norm.weight",
]


def find_gguf(explicit):
    if explicit:
        return explicit
    hits = sorted(glob.glob(os.path.join(CACHE, "gguf", "SmolLM2-135M-Instruct*.gguf")))
    if not hits:
        sys.exit(f"no SmolLM2 GGUF under {CACHE}/gguf: run scripts/setup.sh first")
    return hits[0]


def smollm_pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )


def weight_summary(tensor):
    t = tensor.detach().to(torch.float64)
    flat = t.reshape(-1)
    rows = t if t.dim() == 2 else t.reshape(1, -1)
    row_sums = rows.sum(dim=1)
    order = torch.arange(1, rows.shape[0] + 1, dtype=torch.float64)
    picks = [r for r in (1, 2, 31, 32, 33, 63, 64, rows.shape[0] - 1) if r < rows.shape[0]]
    return {
        "shape": list(tensor.shape),
        "first8": [float(v) for v in flat[:8]],
        "sum": float(flat.sum()),
        "abs_sum": float(flat.abs().sum()),
        # Sensitive to row order, so it catches a missing or wrong Q/K un-permutation (a plain sum is not).
        "row_weighted_sum": float((order * row_sums).sum()),
        "row_samples": {str(r): [float(v) for v in rows[r, :4]] for r in picks},
    }


def perplexity(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].to(torch.float64)
    logp = torch.log_softmax(logits[:-1], dim=-1)
    nll = -logp.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
    return math.exp(float(nll.mean())), len(ids) - 1


def permute_like_llama_cpp(w, n_head):
    """llama.cpp's converter permutation (what import has to undo)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def dequant_blocks():
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import dequantize, quantize

    rng = np.random.default_rng(20241125)
    out = {}
    for name in ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]:
        qtype = Q[name]
        values = (rng.standard_normal((2, 64)) * rng.uniform(0.01, 3.0)).astype(np.float32)
        values[1, :32] += 1.5  # an offset block exercises the minimum of the _1 kinds
        raw = quantize(values, qtype)
        back = dequantize(raw, qtype).astype(np.float32)
        out[name] = {
            "shape": list(values.shape),
            "bytes_hex": raw.tobytes().hex(),
            "values": [float(v) for v in back.reshape(-1)],
        }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", help="the SmolLM2-135M-Instruct GGUF (default: $STASC_CACHE/gguf)")
    ap.add_argument("--check-import", metavar="HF_DIR", help="also compare an imported directory against the GGUF")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = os.path.abspath(find_gguf(args.gguf))
    gdir, gname = os.path.dirname(gguf_path), os.path.basename(gguf_path)
    torch.manual_seed(0)

    tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    plain_backend = tok.backend_tokenizer
    from tokenizers import Tokenizer

    smollm = Tokenizer.from_str(plain_backend.to_str())
    smollm.pre_tokenizer = smollm_pre_tokenizer()

    tokens = {}
    for key, text in TEXTS.items():
        ids = smollm.encode(text, add_special_tokens=True).ids
        entry = {"text": text, "ids": ids, "decoded": smollm.decode(ids, skip_special_tokens=False)}
        plain = tok(text)["input_ids"]
        if plain != ids:
            entry["transformers_gguf_ids"] = plain
        tokens[key] = entry

    chat = {}
    for key, messages in CONVERSATIONS.items():
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        chat[key] = {"messages": messages, "add_generation_prompt": True, "rendered": rendered,
                     "ids": smollm.encode(rendered, add_special_tokens=False).ids}

    model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32)
    model.eval()
    cfg = model.config
    state = model.state_dict()
    weights = {name: weight_summary(state[name]) for name in WEIGHT_TENSORS}

    with torch.no_grad():
        ids = smollm.encode(LOGIT_PROMPT).ids
        last = model(torch.tensor([ids])).logits[0, -1]
        top = torch.topk(last, 5)
    logits = {"prompt": LOGIT_PROMPT, "ids": ids, "first16": [float(v) for v in last[:16]],
              "top5_ids": [int(i) for i in top.indices], "top5_logits": [float(v) for v in top.values]}

    prompt_ids = chat["capital_question"]["ids"]
    with torch.no_grad():
        gen = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                             max_new_tokens=32, do_sample=False, eos_token_id=cfg.eos_token_id,
                             pad_token_id=cfg.pad_token_id)
    new_ids = gen[0, len(prompt_ids):].tolist()
    greedy = {"conversation": "capital_question", "max_new_tokens": 32, "ids": new_ids,
              "text": smollm.decode(new_ids, skip_special_tokens=True)}

    ppl_ids = smollm.encode(PERPLEXITY_TEXT).ids
    ppl, scored = perplexity(model, ppl_ids)
    # The same model with the Q/K rows left in llama.cpp's order: shows the bound separates right from wrong.
    with torch.no_grad():
        for layer in model.model.layers:
            attn = layer.self_attn
            attn.q_proj.weight.copy_(permute_like_llama_cpp(attn.q_proj.weight, cfg.num_attention_heads))
            attn.k_proj.weight.copy_(permute_like_llama_cpp(attn.k_proj.weight, cfg.num_key_value_heads))
    ppl_permuted, _ = perplexity(model, ppl_ids)
    perplexity_entry = {"text": PERPLEXITY_TEXT, "ids": ppl_ids, "scored_tokens": scored, "reference": ppl,
                        "with_qk_left_permuted": ppl_permuted, "uniform": cfg.vocab_size}

    goldens = {
        "generated_by": "scripts/make_gguf_goldens.py",
        "gguf_file": gname,
        "gguf_bytes": os.path.getsize(gguf_path),
        "transformers_version": __import__("transformers").__version__,
        "torch_version": torch.__version__,
        "config": {k: getattr(cfg, k) for k in ["hidden_size", "intermediate_size", "num_hidden_layers",
                                                "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                                                "vocab_size", "rms_norm_eps", "tie_word_embeddings",
                                                "bos_token_id", "eos_token_id", "pad_token_id"]}
                  | {"rope_theta": cfg.rope_parameters["rope_theta"]},
        "tokens": tokens,
        "chat": chat,
        "weights": weights,
        "logits": logits,
        "greedy": greedy,
        "perplexity": perplexity_entry,
    }
    out_dir = os.path.join(ROOT, "tests", "fixtures", "smollm2")
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "goldens.json"), goldens)
    gguf_fixture_dir = os.path.join(ROOT, "tests", "fixtures", "gguf")
    os.makedirs(gguf_fixture_dir, exist_ok=True)
    write_json(os.path.join(gguf_fixture_dir, "dequant_blocks.json"), dequant_blocks())
    print(f"greedy answer: {greedy['text']!r}")
    print(f"perplexity {ppl:.4f} over {scored} tokens; with Q/K left permuted {ppl_permuted:.2f}")
    for key, entry in tokens.items():
        if "transformers_gguf_ids" in entry:
            print(f"tokens[{key}]: plain transformers-from-GGUF ids differ (pre-tokenizer), both recorded")

    if args.check_import:
        fresh = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32).state_dict()
        imported = AutoModelForCausalLM.from_pretrained(args.check_import, dtype=torch.float32).state_dict()
        assert set(fresh) == set(imported), set(fresh) ^ set(imported)
        worst = max(float((fresh[k] - imported[k].to(torch.float32)).abs().max()) for k in fresh)
        print(f"--check-import: {len(fresh)} tensors, max |difference| {worst}")
        itok = AutoTokenizer.from_pretrained(args.check_import)
        for key, entry in tokens.items():
            got = itok(entry["text"])["input_ids"]
            print(f"--check-import: tokens[{key}] {'match' if got == entry['ids'] else 'DIFFER'}")


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
