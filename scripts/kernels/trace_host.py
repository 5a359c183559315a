"""Where a traced training run's time goes, host side and device side (a Kineto Chrome trace from
`stasc bench train --realistic --trace T.json`).

Usage: python3 trace_host.py TRACE.json --steps N [--top K]
Prints the traced span, the GPU's busy time (union of kernel intervals; per device too when the trace has several)
and the kernels launched, per step; then per
host thread its CPU-op count and time in top-level ops per step, and the K ops with the most self time: whether a
step waits on the host launching work or on the GPU running it.
"""
import argparse
import collections
import json

from trace_summary import busy_time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--top", type=int, default=20)
    a = ap.parse_args()
    events = json.load(open(a.trace))["traceEvents"]
    kernels = [e for e in events if e.get("cat") == "kernel"]
    ops = [e for e in events if e.get("cat") == "cpu_op" and "dur" in e]
    launches = [e for e in events if e.get("cat") == "cuda_runtime" and "dur" in e]
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in kernels + ops]
    span = max(s for _, s in spans) - min(s for s, _ in spans)
    n = a.steps
    busy = busy_time([(e["ts"], e["ts"] + e["dur"]) for e in kernels])
    print(f"per step: span {span / n / 1e3:.1f} ms, GPU busy {busy / n / 1e3:.1f} ms, "
          f"{len(kernels) / n:.0f} kernels, {len(launches) / n:.0f} runtime calls "
          f"({sum(e['dur'] for e in launches) / n / 1e3:.1f} ms in them)")
    by_device = collections.defaultdict(list)
    for e in kernels:
        by_device[e.get("args", {}).get("device")].append(e)
    if len(by_device) > 1:
        for device, evs in sorted(by_device.items(), key=lambda kv: str(kv[0])):
            spans = [(e["ts"], e["ts"] + e["dur"]) for e in evs]
            print(f"  device {device}: busy {busy_time(spans) / n / 1e3:.1f} ms a step, {len(evs) / n:.0f} kernels")
    by_thread = collections.defaultdict(list)
    for e in ops:
        by_thread[e["tid"]].append(e)
    for tid, evs in sorted(by_thread.items(), key=lambda kv: -len(kv[1])):
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        top, end = 0.0, None
        for e in evs:
            if end is None or e["ts"] >= end:
                top += e["dur"]
                end = e["ts"] + e["dur"]
        print(f"thread {tid}: {len(evs) / n:.0f} ops a step, {top / n / 1e3:.1f} ms a step in top-level ops")
    # Self time: an op's duration less its direct children's, per thread.
    self_time = collections.Counter()
    count = collections.Counter()
    for tid, evs in by_thread.items():
        stack = []
        for e in evs:
            start, stop = e["ts"], e["ts"] + e["dur"]
            while stack and stack[-1][1] <= start:
                stack.pop()
            self_time[e["name"]] += e["dur"]
            count[e["name"]] += 1
            if stack:
                self_time[stack[-1][0]] -= e["dur"]
            stack.append((e["name"], stop))
    print(f"top {a.top} ops by self time (ms a step, calls a step):")
    for name, t in self_time.most_common(a.top):
        print(f"  {t / n / 1e3:7.2f} ms {count[name] / n:6.0f}x  {name}")
    kcount = collections.Counter(e["name"][:90] for e in kernels)
    ktime = collections.Counter()
    for e in kernels:
        ktime[e["name"][:90]] += e["dur"]
    print("top kernels by time (ms a step, launches a step):")
    for name, t in ktime.most_common(12):
        print(f"  {t / n / 1e3:7.2f} ms {kcount[name] / n:6.0f}x  {name}")


if __name__ == "__main__":
    main()
