"""Sums a Kineto Chrome trace (stasc bench generate --trace PATH) per CUDA kernel and per kind of kernel.

Usage: python3 trace_summary.py TRACE.json --steps N [--top K]
Prints the GPU's busy time (union of kernel intervals), its idle time inside the traced span (the host not keeping
it fed), both per decode step (N = the steps the traced run decoded), then the kernels grouped by kind and the top
K kernels by total time, each with its time per step and share of the busy time.
"""
import argparse
import bisect
import collections
import json
import re

KINDS = [
    ("sampler (stasc_*sample*)", r"stasc_sample|stasc_window_sample|stasc_split_"),
    ("attention", r"stasc_attention|stasc_rope|flash|fmha|attention|sdpa"),
    ("fused norm / SiLU (stasc)", r"stasc_add_rms|stasc_silu"),
    ("matrix products", r"gemm|gemv|cutlass|nvjet|xmma|cublas|splitK|Kernel2|sm90_|sm80_"),
    ("copies / fills", r"copy|fill|memset|memcpy|Memcpy|Memset|cat|index"),
    ("softmax / reductions", r"softmax|reduce|Reduce|sum|max|argmax|norm"),
    ("elementwise", r"elementwise|vectorized|unrolled"),
]


def kind_of(name):
    for kind, pattern in KINDS:
        if re.search(pattern, name):
            return kind
    return "other"


def busy_time(intervals):
    total, end = 0.0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def short(name, n=48):
    return name if len(name) <= n else name[: n - 3] + "..."


def attribute_gaps(events, gpu):
    """For gaps of 10 us or more: the GPU work just before and just after, and the host-side CUDA calls that ran
    during the gap (what the GPU waited for), summed per size class."""
    host = sorted(
        (e["ts"], e["ts"] + e.get("dur", 0), e["name"])
        for e in events
        if e.get("ph") == "X" and e.get("cat") in ("cuda_runtime", "cuda_driver")
    )
    starts = [h[0] for h in host]
    longest = max((h[1] - h[0] for h in host), default=0)
    work = sorted((e["ts"], e["ts"] + e.get("dur", 0), e["name"]) for e in gpu)
    classes = [(10, 100), (100, 1000), (1000, float("inf"))]
    pairs = {c: collections.Counter() for c in classes}
    calls = {c: collections.Counter() for c in classes}
    end, before = None, None
    for start, stop, name in work:
        if end is not None and start > end:
            gap = start - end
            for c in classes:
                if c[0] <= gap < c[1]:
                    pairs[c][(short(before), short(name))] += gap
                    lo = bisect.bisect_left(starts, end - longest)
                    for hs, he, hn in host[lo : bisect.bisect_left(starts, start)]:
                        if he > end:
                            calls[c][hn] += min(he, start) - max(hs, end)
        if end is None or stop > end:
            end, before = stop, name
    for c in classes:
        total = sum(pairs[c].values())
        if not total:
            continue
        print(f"  gaps {c[0]}-{c[1]} us ({total / 1e3:.1f} ms): most idle time between")
        for (b, n), t in pairs[c].most_common(5):
            print(f"    {t / 1e3:7.1f} ms  {b}  ->  {n}")
        print("    host calls during them: " + ", ".join(f"{n} {t / 1e3:.1f} ms" for n, t in calls[c].most_common(6)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("trace")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--by-grid", action="store_true", help="count a kernel's launch grids apart (one per shape)")
    p.add_argument("--gaps", action="store_true", help="say what lies on either side of every gap of 10 us or more")
    a = p.parse_args()
    events = json.load(open(a.trace))["traceEvents"]
    gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    if not gpu:
        print("no GPU activity in the trace (was CUPTI found?)")
        return
    intervals = [(e["ts"], e["ts"] + e.get("dur", 0)) for e in gpu]
    span = max(s for _, s in intervals) - min(s for s, _ in intervals)
    busy = busy_time(intervals)
    steps = max(a.steps, 1)
    us = lambda t: t / steps
    print(f"GPU span {span / 1e3:.1f} ms, busy {busy / 1e3:.1f} ms ({100 * busy / span:.0f}%), idle "
          f"{(span - busy) / 1e3:.1f} ms; per decode step ({steps} steps): busy {us(busy):.0f} us, idle "
          f"{us(span - busy):.0f} us; {len(gpu)} kernels/copies ({len(gpu) / steps:.0f} per step)")
    # Where the idle time lies: gaps between busy stretches, by size (many short gaps: launch latency; a gap per
    # host sync window: the host's bookkeeping; a few long ones: start-up).
    gaps, end = [], None
    for start, stop in sorted(intervals):
        if end is not None and start > end:
            gaps.append(start - end)
        end = stop if end is None else max(end, stop)
    for lo, hi in [(0, 10), (10, 100), (100, 1000), (1000, 10000), (10000, float("inf"))]:
        sel = [g for g in gaps if lo <= g < hi]
        print(f"  idle gaps {lo:>5}-{hi:<5} us: {len(sel):6d} gaps, {sum(sel) / 1e3:8.1f} ms")
    if a.gaps:
        attribute_gaps(events, gpu)
    by_kind, by_name, count = collections.Counter(), collections.Counter(), collections.Counter()
    for e in gpu:
        name = e["name"]
        by_kind[kind_of(name)] += e.get("dur", 0)
        short = name if len(name) <= 100 else name[:97] + "..."
        if a.by_grid and "grid" in e.get("args", {}):
            short = f"{short} grid={e['args']['grid']}"
        by_name[short] += e.get("dur", 0)
        count[short] += 1
    total = sum(by_kind.values())
    print("by kind (kernel time; overlapping kernels count twice):")
    for kind, t in by_kind.most_common():
        print(f"  {kind:28s} {us(t):8.0f} us/step {100 * t / total:5.1f}%")
    print(f"top {a.top} kernels:")
    for name, t in by_name.most_common(a.top):
        print(f"  {us(t):8.0f} us/step {100 * t / total:5.1f}% x{count[name] / steps:5.1f}/step  {name}")
    host = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in ("cuda_runtime", "cuda_driver"):
            host[e["name"]] += e.get("dur", 0)
    if host:
        print("host-side CUDA calls (total ms): " + ", ".join(f"{n} {t / 1e3:.1f}" for n, t in host.most_common(6)))


if __name__ == "__main__":
    main()
