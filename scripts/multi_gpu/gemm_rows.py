"""Does a row of a bf16 matrix product depend on where it sits in the batch? For the decode-step shapes of the
Qwen2.5-1.5B model at 256 rows, multiplies X and a row permutation of X by the same weight and counts rows whose
results differ bit for bit (cuBLAS's split/stream-K kernels can reduce tiles at different positions differently)."""
import torch

torch.manual_seed(0)
rows = 256
shapes = {"qkv": (1536, 2048), "o_proj": (1536, 1536), "gate_up": (1536, 17920), "down": (8960, 1536),
          "lm_head": (1536, 151936)}
for flag in (True, False):
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = flag
    for name, (k, n) in shapes.items():
        x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k ** 0.5
        perm = torch.randperm(rows, device="cuda")
        y = x @ w.T
        y2 = x[perm] @ w.T
        diff = (y[perm] != y2).any(dim=1).sum().item()
        one = (x[:1] @ w.T != y[:1]).any().item()
        print(f"reduced_precision_reduction={flag} {name} [{rows}x{k}]x[{k}x{n}]: {diff} of {rows} rows differ after a "
              f"row permutation; row 0 alone differs: {one}")
