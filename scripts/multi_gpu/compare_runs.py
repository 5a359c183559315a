"""Compares the samples of two STaSC run directories: for iter_N/initial.jsonl and iter_N/corrections.jsonl, how many
samples (matched by split, question id and sample indices) have identical text, and the training losses of each.
Usage: compare_runs.py RUN_A RUN_B [ITER ...]"""
import json
import os
import sys


def rows(path):
    if not os.path.exists(path):
        return {}
    out = {}
    for line in open(path):
        r = json.loads(line)
        key = (r.get("split"), str(r.get("id")), r.get("initial_sample"), r.get("sample"))
        out[key] = r["text"]
    return out


a, b = sys.argv[1], sys.argv[2]
iters = sys.argv[3:] or ["0"]
for it in iters:
    for name in ("initial.jsonl", "corrections.jsonl"):
        ra, rb = rows(f"{a}/iter_{it}/{name}"), rows(f"{b}/iter_{it}/{name}")
        same = sum(1 for k in ra if k in rb and ra[k] == rb[k])
        print(f"iter_{it}/{name}: {same} of {len(ra)} samples identical ({len(rb)} in the second run)")
        for k in [k for k in ra if k in rb and ra[k] != rb[k]][:3]:
            x, y = ra[k], rb[k]
            common = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
            print(f"  differs {k}: same first {common} of {len(x)}/{len(y)} characters")
    for run in (a, b):
        m = f"{run}/iter_{it}/metrics.json"
        if os.path.exists(m):
            j = json.load(open(m))
            curve = j.get("loss_curve") or []
            print(f"  {os.path.basename(run)} iter_{it}: train_loss {j.get('train_loss')}, "
                  f"loss curve {[round(x, 6) for x in curve[:8]]}, phase_seconds {j.get('phase_seconds')}")
