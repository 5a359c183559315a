"""HF baseline of `stasc bench train --realistic --pairs`: transformers training a random-weight model of the
Qwen2.5-1.5B shape at the reference's settings on a run's train pairs, as HF Trainer runs them on one GPU: one
example per forward/backward (per_device_train_batch_size 1), 8 of them accumulated per optimiser step (4
accumulation steps x 2 ranks sharing the GPU), clipping at 1.0 and fused AdamW (lr 7e-6, weight decay 0.1).
Examples are the pairs' conversations rendered with the tokenizer's chat template (what stasc tokenises).

Usage: python3 hf_realistic.py PAIRS.jsonl TOKENIZER_DIR [--steps N] [--warmup W]
Prints "HF train realistic ...: X tok/s, peak Y GiB".
"""
import argparse
import json
import time

import torch
from transformers import AutoTokenizer

from hf_baseline import build


def main():
    p = argparse.ArgumentParser()
    p.add_argument("pairs")
    p.add_argument("tokenizer")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    chats = [json.loads(l)["messages"] for l in open(a.pairs) if l.strip()]
    examples = [tok.apply_chat_template(c, tokenize=True) for c in chats]
    examples = [e["input_ids"] if isinstance(e, dict) or hasattr(e, "keys") else e for e in examples]
    lengths = [len(e) for e in examples]
    print(f"HF realistic: {len(examples)} pairs, {sum(lengths) / len(lengths):.0f} tokens on average", flush=True)
    model = build()  # hf_baseline.py's random Qwen2.5-1.5B-shape model (copied beside this script)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=7e-6, weight_decay=0.1, fused=True)
    per_step = 8
    torch.cuda.reset_peak_memory_stats()
    tokens = 0
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            torch.cuda.synchronize()
            t = time.time()
            tokens = 0
        batch = [examples[(step * per_step + k) % len(examples)] for k in range(per_step)]
        for ids in batch:
            x = torch.tensor([ids], device="cuda")
            loss = model(input_ids=x, labels=x).loss / per_step
            loss.backward()
            tokens += len(ids)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    el = time.time() - t
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"HF train realistic (bs 1 x 8 accumulated, {a.steps} steps): {tokens / el:.0f} tok/s, "
          f"peak {peak:.1f} GiB allocated", flush=True)


if __name__ == "__main__":
    main()
