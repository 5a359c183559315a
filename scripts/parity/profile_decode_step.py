"""Kernel-level profile of one stasc decode step, replayed in PyTorch with the same libtorch ops stasc issues
(src/model/layers.rs with fused projections, src/generate/sampling.rs top-p), on the Qwen2.5-1.5B shape in bf16.

stasc runs these ops from Rust through libtorch and replays them as a CUDA graph; tch has no profiler binding, so
this script reproduces the op sequence op for op and lets torch.profiler attribute GPU time to kernels. It prints the
CUDA time per decode step for eager launches and for a CUDA-graph replay, and the top kernels.

Usage (GPU machine): python3 scripts/parity/profile_decode_step.py [--batch 256] [--attend 384] [--greedy]
"""
import argparse
import time

import torch

H, I, L, NH, KVH, D, V = 1536, 8960, 28, 12, 2, 128, 151936


def make(batch, cache_len):
    g = torch.Generator(device="cuda").manual_seed(0)
    w = lambda *s: (torch.randn(*s, device="cuda", generator=g) * 0.02).to(torch.bfloat16)  # noqa: E731
    layers = [dict(n1=torch.ones(H, device="cuda", dtype=torch.bfloat16), qkv=w((NH + 2 * KVH) * D, H),
                   qkv_b=w((NH + 2 * KVH) * D), o=w(H, NH * D), n2=torch.ones(H, device="cuda", dtype=torch.bfloat16),
                   gu=w(2 * I, H), down=w(H, I),
                   k=torch.zeros(batch, KVH, cache_len, D, device="cuda", dtype=torch.bfloat16),
                   v=torch.zeros(batch, KVH, cache_len, D, device="cuda", dtype=torch.bfloat16)) for _ in range(L)]
    embed = w(V, H)
    pos = torch.arange(cache_len, device="cuda", dtype=torch.float32)
    inv = 1.0 / (1e6 ** (torch.arange(0, D, 2, device="cuda", dtype=torch.float32) / D))
    freqs = pos[:, None] * inv[None]
    cos = torch.cat([freqs, freqs], -1).cos().to(torch.bfloat16)
    sin = torch.cat([-freqs.sin(), freqs.sin()], -1).to(torch.bfloat16)
    return layers, embed, cos, sin


def step(state, batch, attend, greedy):
    layers, embed, cos, sin, tokens, positions, u = state
    rows = torch.arange(batch, device="cuda")
    x = torch.nn.functional.embedding(tokens, embed)  # [B, 1, H]
    wp = positions.reshape(batch)
    c = cos.index_select(0, wp).view(batch, 1, 1, D)
    s = sin.index_select(0, wp).view(batch, 1, 1, D)
    mask = (torch.arange(attend, device="cuda").view(1, attend) <= wp.view(batch, 1)).view(batch, 1, 1, attend)
    for ly in layers:
        h = torch.rms_norm(x, [H], ly["n1"], 1e-6)
        allh = torch.nn.functional.linear(h, ly["qkv"], ly["qkv_b"]).view(batch, 1, NH + 2 * KVH, D)
        qk = allh.narrow(2, 0, NH + KVH)
        qk = qk * c + torch.roll(qk, D // 2, -1) * s
        q, k, v = qk.narrow(2, 0, NH), qk.narrow(2, NH, KVH), allh.narrow(2, NH + KVH, KVH)
        ly["k"][rows, :, wp] = k.reshape(batch, KVH, D)
        ly["v"][rows, :, wp] = v.reshape(batch, KVH, D)
        o = torch.nn.functional.scaled_dot_product_attention(q.reshape(batch, KVH, NH // KVH, D),
                                                             ly["k"].narrow(2, 0, attend), ly["v"].narrow(2, 0, attend),
                                                             attn_mask=mask)
        x = x + torch.nn.functional.linear(o.reshape(batch, 1, NH * D), ly["o"])
        h = torch.rms_norm(x, [H], ly["n2"], 1e-6)
        gu = torch.nn.functional.linear(h, ly["gu"])
        x = x + torch.nn.functional.linear(torch.nn.functional.silu(gu.narrow(-1, 0, I)) * gu.narrow(-1, I, I),
                                           ly["down"])
    logits = torch.nn.functional.linear(torch.rms_norm(x, [H], layers[0]["n1"], 1e-6).view(batch, H), embed)
    if greedy:
        nxt = logits.argmax(-1)
    else:
        vals, ids = logits.sort(-1, descending=True)
        p = (vals.float() / 0.6).softmax(-1)
        cum = p.cumsum(-1)
        kept = ((cum - p) < 0.9).sum(-1, keepdim=True)
        total = cum.gather(-1, kept - 1)
        choice = (cum <= u.view(-1, 1) * total).sum(-1, keepdim=True).clamp_max(V - 1)
        nxt = ids.gather(-1, choice).view(-1)
    tokens.copy_(nxt.view(batch, 1))
    positions.add_(1).clamp_max_(attend - 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--attend", type=int, default=384)
    p.add_argument("--greedy", action="store_true")
    a = p.parse_args()
    layers, embed, cos, sin = make(a.batch, 512)
    tokens = torch.randint(100, V, (a.batch, 1), device="cuda")
    positions = torch.full((a.batch, 1), a.attend - 200, device="cuda", dtype=torch.long)
    u = torch.rand(a.batch, device="cuda")
    state = (layers, embed, cos, sin, tokens, positions, u)
    with torch.no_grad():
        for _ in range(3):
            step(state, a.batch, a.attend, a.greedy)
        torch.cuda.synchronize()
        t = time.time()
        for _ in range(10):
            step(state, a.batch, a.attend, a.greedy)
        host = (time.time() - t) / 10
        torch.cuda.synchronize()
        eager = (time.time() - t) / 10
        graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step(state, a.batch, a.attend, a.greedy)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            step(state, a.batch, a.attend, a.greedy)
        torch.cuda.synchronize()
        t = time.time()
        for _ in range(20):
            graph.replay()
        replay_host = (time.time() - t) / 20
        torch.cuda.synchronize()
        replayed = (time.time() - t) / 20
        print(f"decode step bs={a.batch} attend={a.attend} {'greedy' if a.greedy else 'top-p'}: eager {eager * 1e3:.2f} ms "
              f"(host {host * 1e3:.2f} ms), graph replay {replayed * 1e3:.2f} ms (host {replay_host * 1e3:.3f} ms)")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step(state, a.batch, a.attend, a.greedy)  # kernels as in the graph, launched eagerly for tracing
            torch.cuda.synchronize()
        print("kernel time over 5 steps:")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))


if __name__ == "__main__":
    main()
