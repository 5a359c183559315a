"""Builds the tiny random HF models stasc's parity tests load, with transformers' own reference outputs.

For each model (Qwen2 tied and untied, Llama with llama3 RoPE scaling, Phi3, and the untied Qwen2 again saved as
shards) it writes into OUT/<name>/:
  - config.json, model.safetensors (or shards + model.safetensors.index.json), generation_config.json (f32);
  - tokenizer.json / tokenizer_config.json: a byte-level BPE of 300 tokens with a ChatML chat template;
  - reference.safetensors: `input_ids` [2, 16] and HF's `logits` for them [2, 16, vocab] (one full forward, f32), and
    `greedy_prompt` [12] with `greedy_tokens` [64], HF generate's greedy continuation (no EOS stop);
    and `greedy_margins` [64], HF's top-1 minus top-2 logit at each greedy step;
  - reference.json: the same ids as JSON, the logits tolerance, and the smallest greedy margin, which says how far
    the continuation is from a tie (a comparison is only meaningful if it is well above float noise).

Weights are drawn with a wide normal (std 0.2) so logits are spread out and greedy choices are not near-ties.
Run: ~/.cache/stasc/venv/bin/python scripts/parity/make_tiny_models.py [--out tests/fixtures/tiny_models]
scripts/parity/gpu_parity.py reuses these functions on the GPU and adds a Qwen2.5-1.5B-shape bf16 model.
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (GenerationConfig, LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

VOCAB = 300
NEW_TOKENS = 64
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome. Two plus two equals four.",
    "Question: what is 12 times 7? Answer: 84. Let me check the answer step by step.",
    "Self-correction: the initial answer was wrong, the corrected answer is below.",
] * 20


def tiny_shape(**extra):
    shape = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6, bos_token_id=None,
                 eos_token_id=[2, 0], pad_token_id=None)
    shape.update(extra)
    return shape


def tiny_specs():
    """name -> (class, config, seed); the sharded model is the untied Qwen2 again, saved in 100 KB shards."""
    untied = (Qwen2ForCausalLM, Qwen2Config(**tiny_shape(tie_word_embeddings=False)), 1001)
    return {
        "qwen2_tied": (Qwen2ForCausalLM, Qwen2Config(**tiny_shape(tie_word_embeddings=True, rope_theta=10000.0)), 1000),
        "qwen2_untied": untied,
        "llama3_rope": (LlamaForCausalLM, LlamaConfig(**tiny_shape(
            tie_word_embeddings=True, rope_scaling={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                   "original_max_position_embeddings": 32})), 1002),
        "phi3": (Phi3ForCausalLM, Phi3Config(**tiny_shape(tie_word_embeddings=False, rms_norm_eps=1e-5)), 1003),
        "qwen2_sharded": untied,
    }


QWEN25_1P5B = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                   num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
                   rms_norm_eps=1e-6, tie_word_embeddings=True, eos_token_id=[151645, 151643])


def build_tokenizer(out_dir):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    assert tok.get_vocab_size() <= VOCAB, tok.get_vocab_size()
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHATML,
                   "model_max_length": 256, "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2)


def randomize(model, seed, big):
    """Wide random weights (std 0.2; norms 1 + 0.2 n) so logits are well separated; HF init kept when `big`."""
    if big:
        return
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen) * 0.2
            p.copy_(1.0 + noise if name.endswith("norm.weight") else noise)


def greedy_margins(model, seq, new_tokens):
    """Top-1 minus top-2 logit at each greedy step (how far each choice is from a tie)."""
    with torch.no_grad():
        logits = model(input_ids=seq).logits[0, seq.shape[1] - new_tokens - 1:-1].float()
    top2 = logits.topk(2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).cpu()


def build_model(cls, cfg, device, dtype, seed, big):
    torch.manual_seed(seed)
    with torch.device(device):
        model = cls(cfg)
    randomize(model, seed, big)
    return model.to(device=device, dtype=dtype).eval()


def reference_outputs(model, vocab, seed, device, new_tokens=NEW_TOKENS):
    """HF's logits for fixed random ids and its greedy continuation (no EOS stop) of a fixed random prompt."""
    gen = torch.Generator().manual_seed(seed + 1)
    input_ids = torch.randint(3, min(vocab, 300), (2, 16), generator=gen)
    prompt = torch.randint(3, min(vocab, 300), (12,), generator=gen)
    with torch.no_grad():
        logits = model(input_ids=input_ids.to(device)).logits.float().cpu()
        gcfg = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0,
                                bos_token_id=None)
        seq = model.generate(input_ids=prompt[None].to(device), attention_mask=torch.ones_like(prompt[None]).to(device),
                             generation_config=gcfg)
    greedy = seq[0, prompt.shape[0]:].cpu()
    assert greedy.shape[0] == new_tokens, f"HF generate stopped early ({greedy.shape[0]} tokens)"
    margins = greedy_margins(model, seq, new_tokens)
    return {"input_ids": input_ids, "logits": logits, "greedy_prompt": prompt, "greedy_tokens": greedy,
            "greedy_margins": margins}


def write_reference(out, ref, meta):
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(out, "reference.safetensors"))
    meta = dict(meta, input_ids=ref["input_ids"].tolist(), greedy_prompt=ref["greedy_prompt"].tolist(),
                greedy_tokens=ref["greedy_tokens"].tolist(), min_greedy_margin=float(ref["greedy_margins"].min()))
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(meta, f, indent=1)


def make(name, cls, cfg, out_root, device, dtype, seed, big):
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    model = build_model(cls, cfg, device, dtype, seed, big)
    model.save_pretrained(out, max_shard_size="100KB" if name == "qwen2_sharded" else "50GB")
    build_tokenizer(out)
    ref = reference_outputs(model, cfg.vocab_size, seed, device)
    meta = {"architecture": cls.__name__, "dtype": str(dtype).removeprefix("torch."), "device": device,
            "logits_tolerance": 1e-4}
    write_reference(out, ref, meta)
    print(f"{name}: saved to {out}, min greedy top-1/top-2 margin {float(ref['greedy_margins'].min()):.4f}",
          flush=True)
    return model, ref


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="tests/fixtures/tiny_models")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    for name, (cls, cfg, seed) in tiny_specs().items():
        make(name, cls, cfg, a.out, a.device, torch.float32, seed, big=False)


if __name__ == "__main__":
    main()
