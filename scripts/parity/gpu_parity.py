"""Writes GPU parity references for stasc: the tiny random models of make_tiny_models.py in f32 on CUDA, and a
Qwen2.5-1.5B-shape random model (HF init, seed 0, like scripts/bench/hf_baseline.py) in bf16 on CUDA.

Each model directory gets what make_tiny_models.py writes (weights, tokenizer, reference.safetensors/json). For the
bf16 model the logits tolerance is measured, not guessed: HF's own bf16 logits are compared with the same weights
run in f32 (`logits_f32` is stored too), and stasc may differ from HF bf16 by at most twice HF's own bf16 error
(both are bf16 roundings of the same f32 computation, so their distance is bounded by the sum of their errors).
Greedy continuations are only decidable while HF's top-1/top-2 margin exceeds that tolerance; the number of such
leading tokens is stored as `greedy_decidable_tokens`, and only that prefix must match.

Usage on the GPU machine (python with torch + transformers):
  python3 scripts/parity/gpu_parity.py --out /tmp/parity
  STASC_PARITY_DIR=/tmp/parity STASC_PARITY_DEVICE=cuda <it test binary> parity_dir_from_env --nocapture
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tiny_models import (QWEN25_1P5B, build_model, build_tokenizer, make, reference_outputs,  # noqa: E402
                              tiny_specs, write_reference)
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402


def big_model(out_root):
    name = "qwen2_1p5b_shape"
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    cfg = Qwen2Config(**QWEN25_1P5B)
    model = build_model(Qwen2ForCausalLM, cfg, "cuda", torch.bfloat16, seed=0, big=True)
    model.save_pretrained(out)
    build_tokenizer(out)
    ref = reference_outputs(model, cfg.vocab_size, seed=0, device="cuda")
    model = model.float()
    with torch.no_grad():
        ref["logits_f32"] = model(input_ids=ref["input_ids"].cuda()).logits.float().cpu()
    hf_bf16_error = float((ref["logits"] - ref["logits_f32"]).abs().max())
    tolerance = 2 * hf_bf16_error
    below = (ref["greedy_margins"] < tolerance).nonzero()
    decidable = int(below[0, 0]) if below.numel() else ref["greedy_tokens"].shape[0]
    write_reference(out, ref, {"architecture": "Qwen2ForCausalLM", "dtype": "bfloat16", "device": "cuda",
                               "logits_tolerance": tolerance, "hf_bf16_error_vs_f32": hf_bf16_error,
                               "greedy_decidable_tokens": decidable})
    print(f"{name}: HF bf16 vs f32 max|diff| {hf_bf16_error:.3e} -> tolerance {tolerance:.3e}; "
          f"greedy decidable for {decidable} tokens; logit scale max|logits| {float(ref['logits'].abs().max()):.3f}",
          flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="/tmp/parity")
    p.add_argument("--no-big", action="store_true", help="skip the 1.5B-shape bf16 model")
    a = p.parse_args()
    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    for name, (cls, cfg, seed) in tiny_specs().items():
        if name != "qwen2_sharded":
            make(name, cls, cfg, a.out, "cuda", torch.float32, seed, big=False)
    if not a.no_big:
        big_model(a.out)


if __name__ == "__main__":
    main()
