"""LayerNorm (+ residual) in Triton vs torch eager and torch.compile, on BERT-base's shape.

[16384, 768] = batch 64 x 256 tokens x hidden 768, in bfloat16 (add float32 with
``--dtypes bfloat16 float32``), with the residual (BERT's ``LayerNorm(h + residual)``, the issue's
case) and without. Every kernel output is first checked against the tests' torch reference
(float32, from the same inputs), then timed with ``triton.testing.do_bench`` (median, 20th/80th
percentiles) next to torch eager (``x + r`` then ``F.layer_norm``, weights in the activation
dtype as a bf16 model holds them) and torch.compile of the same function (Inductor, static
shapes). Bandwidth is effective: the formula is in ``ln_bytes``, divided by the median time.

    python benchmarks/layer_norm.py --out benchmarks/results/layer_norm_gpu.json
    python benchmarks/layer_norm.py --dry-run    # no GPU: checks tiny shapes under the interpreter

Without CUDA (and without --dry-run) it prints a message and exits 0, writing nothing.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

SHAPES = [(16384, 768)]  # [rows = B * T, H]: BERT-base at batch 64, 256 tokens
EPS = 1e-12  # BERT's layer_norm_eps


def ln_bytes(rows: int, H: int, itemsize: int, residual: bool) -> int:
    """Effective bytes: x (and the residual) read once, y written once.

    Not counted (< 0.02%): weight and bias, 2 * H values, read by every row from L2.
    """
    return rows * H * itemsize * (3 if residual else 2)


def make_case(rows: int, H: int, dtype, device: str, residual: bool, seed: int = 0):
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(rows, H, generator=g, device=device).to(dtype)
    r = torch.randn(rows, H, generator=g, device=device).to(dtype) if residual else None
    w = (1 + 0.3 * torch.randn(H, generator=g, device=device)).to(dtype)
    b = torch.randn(H, generator=g, device=device).to(dtype)
    return x, r, w, b


def check(x, r, w, b) -> None:
    """The kernel's output against the tests' torch reference in float32 (assert_close)."""
    from helpers import assert_close
    from test_layer_norm import TOL, torch_add_layer_norm

    from minialign.kernels.layer_norm import layer_norm

    y = layer_norm(x, w, b, EPS, residual=r)
    expected = torch_add_layer_norm(x.float(), w.float(), b.float(), EPS, None if r is None else r.float())
    assert_close(y, expected, **TOL[x.dtype], name=f"layer_norm {tuple(x.shape)} {x.dtype} residual={r is not None}")


def bench(rows: int, H: int, dtype, residual: bool, compile_: bool) -> dict:
    import torch
    from common import time_candidates
    from test_layer_norm import torch_add_layer_norm

    from minialign.kernels.layer_norm import layer_norm

    x, r, w, b = make_case(rows, H, dtype, "cuda", residual)
    check(x, r, w, b)
    fns = {
        "triton": lambda: layer_norm(x, w, b, EPS, residual=r),
        "torch_eager": lambda: torch_add_layer_norm(x, w, b, EPS, r),
    }
    if compile_:
        import torch._dynamo

        torch._dynamo.reset()  # a fresh graph per case: no recompile limit, no dynamic shapes
        compiled = torch.compile(torch_add_layer_norm, dynamic=False)
        fns["torch_compile"] = lambda: compiled(x, w, b, EPS, r)

    n_bytes = ln_bytes(rows, H, dtype.itemsize, residual)
    result = dict(shape=[rows, H], residual=residual, dtype=str(dtype).replace("torch.", ""), eps=EPS, bytes=n_bytes)
    result.update(time_candidates(fns, n_bytes))
    return result


def dry_run() -> None:
    """No timing: the byte bookkeeping, and correctness checks on tiny shapes (on the
    interpreter when there is no GPU)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    for rows, H in SHAPES:
        for residual in (True, False):
            print(f"layer_norm [{rows}, {H}] residual={residual}: "
                  f"{ln_bytes(rows, H, 2, residual) / 1e6:6.1f} MB in bfloat16")
    for rows, H, residual in ((5, 768, True), (3, 17, False)):
        check(*make_case(rows, H, torch.float32, device, residual))
        print(f"dry run: layer_norm [{rows}, {H}] residual={residual} on {device}: matches the torch reference")


def main() -> None:
    from common import kernel_bench_parser, should_time_on_gpu

    parser = kernel_bench_parser(__doc__)
    args = parser.parse_args()

    if not should_time_on_gpu("layer_norm", args.dry_run):
        if args.dry_run:
            dry_run()
        return

    import torch

    import triton
    from common import gpu_device_name, machine, write_json

    results = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for rows, H in SHAPES:
            for residual in (True, False):
                r = bench(rows, H, dtype, residual, not args.no_compile)
                print(f"layer_norm {r['dtype']:8s} [{rows}, {H}] residual={residual}: triton "
                      f"{r['triton']['median_ms'] * 1e3:6.1f} us {r['triton']['GBps']:6.0f} GB/s, "
                      f"eager {r['torch_eager']['GBps']:6.0f} GB/s"
                      + (f", compile {r['torch_compile']['GBps']:6.0f} GB/s" if not args.no_compile else ""),
                      file=sys.stderr)
                results.append(r)
    write_json(args.out, dict(
        benchmark="layer_norm", device=gpu_device_name(), machine=machine(), triton=triton.__version__,
        bytes_formula="rows*H*itemsize * (3 with residual: x, r read and y written; 2 without)",
        results=results,
    ))


if __name__ == "__main__":
    main()
