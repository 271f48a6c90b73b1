"""The fused-epilogue GEMM vs torch: cuBLAS matmul alone, torch eager, torch.compile.

Shapes are align-base's, in bfloat16:

- BERT FFN at B=256 captions of T=64 tokens (M = 16384): the up-projection with bias + GELU
  (the issue's headline case: target within 10% of torch.matmul alone on an H100) and the
  down-projection with bias + residual.
- EfficientNet-B7 MBConv 1x1 convs at batch 64 on a 289x289 image: block 30 (stage 5, 18x18
  maps, 224 <-> 1344 channels) and block 40 (stage 6, 9x9 maps, 384 <-> 2304). Expansion:
  BN affine + SiLU. Projection: the squeeze-excitation gate on A, BN affine, + residual.

Per case, all timed in the same run on the same inputs:

    triton          gemm() with the fused epilogue
    triton_plain    gemm() with no epilogue and no A-scale (the main loop alone)
    torch_matmul    a @ w.T alone (cuBLAS; no epilogue at all): the speed-of-light reference
    torch_eager     what transformers runs: F.linear + F.gelu / the channels_last conv2d +
                    batch_norm + silu, (x * gate) before the conv, + residual: one kernel each
    torch_compile   torch.compile of torch_eager

Each kernel output is first checked against ``gemm_reference`` (float32), and torch_eager too
(a looser tolerance: eager bfloat16 rounds between ops), before anything is timed.
FLOPs = 2 * M * N * K (the matrix product; the epilogue's O(M*N) work is not counted).

    python benchmarks/gemm.py --out benchmarks/results/gemm_gpu.json [--dtypes bfloat16,float32] [--no-compile]
                              [--sweep]   # also time other tile shapes, to revisit the kernel's table
    python benchmarks/gemm.py --dry-run     # no GPU: tiny shapes under TRITON_INTERPRET=1, checks only
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "bert_up" | "bert_down" | "expand" | "project"
    K: int
    N: int
    rows: int  # BERT: B*T tokens; vision: H*W pixels per image
    images: int = 1  # vision: batch size B (M = images * rows)
    hw: tuple[int, int] | None = None

    @property
    def M(self) -> int:
        return self.images * self.rows

    @property
    def flops(self) -> int:
        return 2 * self.M * self.N * self.K

    @property
    def epilogue(self) -> str:
        return {"bert_up": "bias + gelu", "bert_down": "bias + residual", "expand": "BN affine + silu",
                "project": "SE a_scale + BN affine + residual"}[self.kind]


def cases(dry_run: bool) -> list[Case]:
    if dry_run:  # the same cases, shrunk (K and N / 16; a few pixels) for the interpreter
        return [Case("bert_ffn_up", "bert_up", 48, 192, 37), Case("bert_ffn_down", "bert_down", 192, 48, 37),
                Case("vision_b30_expand", "expand", 14, 84, 9, 2, (3, 3)),
                Case("vision_b30_project", "project", 84, 14, 9, 2, (3, 3)),
                Case("vision_b40_expand", "expand", 24, 144, 4, 3, (2, 2)),
                Case("vision_b40_project", "project", 144, 24, 4, 3, (2, 2))]
    return [
        Case("bert_ffn_up", "bert_up", 768, 3072, 256 * 64),  # B=256, T=64
        Case("bert_ffn_down", "bert_down", 3072, 768, 256 * 64),
        Case("vision_b30_expand", "expand", 224, 1344, 18 * 18, 64, (18, 18)),  # stage 5, 18x18
        Case("vision_b30_project", "project", 1344, 224, 18 * 18, 64, (18, 18)),
        Case("vision_b40_expand", "expand", 384, 2304, 9 * 9, 64, (9, 9)),  # stage 6, 9x9
        Case("vision_b40_project", "project", 2304, 384, 9 * 9, 64, (9, 9)),
    ]


def make_inputs(case: Case, device, dtype, seed: int = 0) -> dict:
    """Weights ~ 1/sqrt(K), activations O(1), random batchnorm statistics (as a loaded model has)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, scale=1.0, offset=0.0: (torch.randn(shape, generator=g) * scale + offset)  # noqa: E731
    M, K, N = case.M, case.K, case.N
    x = dict(a=r(M, K, offset=0.2), w=r(N, K, scale=K ** -0.5))
    if case.kind.startswith("bert"):
        x["bias"] = r(N, scale=0.1)
    else:
        x.update(bn_weight=1 + 0.2 * r(N), bn_bias=r(N, scale=0.1), bn_mean=r(N, scale=0.1),
                 bn_var=0.5 + torch.rand(N, generator=g))
    if case.kind in ("bert_down", "project"):
        x["residual"] = r(M, N)
    if case.kind == "project":
        x["gate"] = torch.rand(case.images, K, generator=g)  # a sigmoid output, in (0, 1)
    x = {k: v.to(device=device, dtype=dtype) for k, v in x.items()}
    if case.kind == "project" or case.kind == "expand":
        # The kernel's folded batchnorm, computed once at load time in float32 (as batchnorm_act).
        eps = 1e-3  # align-base's batch_norm_eps
        w, b, m, v = (x[k].float() for k in ("bn_weight", "bn_bias", "bn_mean", "bn_var"))
        x["scale"] = w / torch.sqrt(v + eps)
        x["shift"] = b - m * x["scale"]
        x["eps"] = eps
    if case.kind == "project":
        x["gate"] = x["gate"].float()  # the SE-gate kernel emits float32
    return x


def kernel_kwargs(case: Case, x: dict) -> dict:
    return {
        "bert_up": lambda: dict(bias=x["bias"], activation="gelu"),
        "bert_down": lambda: dict(bias=x["bias"], residual=x["residual"]),
        "expand": lambda: dict(scale=x["scale"], shift=x["shift"], activation="silu"),
        "project": lambda: dict(scale=x["scale"], shift=x["shift"], residual=x["residual"], a_scale=x["gate"],
                                rows_per_image=case.rows),
    }[case.kind]()


def torch_eager(case: Case, x: dict):
    """The unfused torch function, as transformers runs it (channels_last NCHW views for convs)."""
    import torch.nn.functional as F

    if case.kind == "bert_up":
        return lambda: F.gelu(F.linear(x["a"], x["w"], x["bias"]))
    if case.kind == "bert_down":
        return lambda: F.linear(x["a"], x["w"], x["bias"]) + x["residual"]
    B, (H, W) = case.images, case.hw
    nchw = lambda t: t.view(B, H, W, t.shape[-1]).permute(0, 3, 1, 2)  # noqa: E731  channels_last, no copy
    a4, w4 = nchw(x["a"]), x["w"][:, :, None, None]
    bn = (x["bn_mean"], x["bn_var"], x["bn_weight"], x["bn_bias"])

    def expand():
        return F.silu(F.batch_norm(F.conv2d(a4, w4), *bn, training=False, eps=x["eps"]))

    def project():
        gated = a4 * x["gate"].to(a4.dtype)[:, :, None, None]
        return F.batch_norm(F.conv2d(gated, w4), *bn, training=False, eps=x["eps"]) + nchw(x["residual"])

    return expand if case.kind == "expand" else project


def as_rows(y, case: Case):
    """[B, C, H, W] channels_last (or [M, N]) -> [M, N], to compare with the kernel."""
    return y.permute(0, 2, 3, 1).reshape(case.M, case.N) if y.ndim == 4 else y


def check(case: Case, x: dict, dtype) -> None:
    """Kernel and eager vs gemm_reference, before any timing."""
    import torch
    from helpers import TOLERANCES, assert_close

    from minialign.kernels.gemm import gemm, gemm_reference

    kw = kernel_kwargs(case, x)
    ref = gemm_reference(x["a"], x["w"], **kw)
    tol = TOLERANCES[str(dtype).removeprefix("torch.")]
    assert_close(gemm(x["a"], x["w"], **kw), ref, **tol, name=f"{case.name}: triton")
    loose = dict(atol=5e-2, rtol=5e-2) if dtype != torch.float32 else TOLERANCES["float32"]
    assert_close(as_rows(torch_eager(case, x)(), case), ref, **loose, name=f"{case.name}: torch_eager")


# Tile shapes to compare with --sweep (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): the
# kernel's table (CONFIGS) was chosen on paper, by the kernel lab's roofline
# (benchmarks/gemm_configs.py); this times tiles for real, to revisit it.
SWEEP = [(128, 256, 64, 8, 3), (128, 256, 64, 8, 4), (256, 128, 64, 8, 3), (128, 128, 64, 4, 3),
         (128, 128, 64, 4, 4), (128, 128, 64, 8, 3), (128, 128, 64, 8, 4), (128, 128, 32, 4, 4),
         (64, 256, 64, 4, 4), (128, 64, 64, 4, 4)]


def sweep(case: Case, x: dict) -> dict:
    """Time the fused kernel under each SWEEP tile shape (skipping any that fail to compile)."""
    from common import gpu_time_ms
    from minialign.kernels.gemm import gemm

    kw, out = kernel_kwargs(case, x), {}
    for bm, bn, bk, warps, stages in SWEEP:
        cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)
        key = f"{bm}x{bn}x{bk}_w{warps}_s{stages}"
        try:
            t = gpu_time_ms(lambda: gemm(x["a"], x["w"], config=cfg, **kw))
        except Exception as e:  # e.g. out of shared memory for this tile shape
            out[key] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            continue
        t["tflops"] = case.flops / (t["median_ms"] * 1e-3) / 1e12
        out[key] = t
    print(f"  sweep {case.name}: " + "  ".join(f"{k}={v['tflops']:.0f}TF" if "tflops" in v else f"{k}=error"
                                           for k, v in out.items()), flush=True)
    return out


def run_case(case: Case, dtype, compile_: bool, sweep_tiles: bool = False) -> dict:
    import torch

    from common import gpu_time_ms
    from minialign.kernels.gemm import gemm

    x = make_inputs(case, "cuda", dtype)
    check(case, x, dtype)
    kw = kernel_kwargs(case, x)
    eager = torch_eager(case, x)
    fns = {
        "triton": lambda: gemm(x["a"], x["w"], **kw),
        "triton_plain": lambda: gemm(x["a"], x["w"]),
        "torch_matmul": lambda: x["a"] @ x["w"].t(),
        "torch_eager": eager,
    }
    if compile_:
        compiled = torch.compile(eager)
        compiled()  # compile outside the timing
        fns["torch_compile"] = compiled
    timings = {}
    for name, fn in fns.items():
        t = gpu_time_ms(fn)
        t["tflops"] = case.flops / (t["median_ms"] * 1e-3) / 1e12
        timings[name] = t
    result = dict(name=case.name, M=case.M, K=case.K, N=case.N, epilogue=case.epilogue, flops=case.flops,
                  dtype=str(dtype).removeprefix("torch."), timings=timings,
                  triton_vs_matmul=timings["triton"]["median_ms"] / timings["torch_matmul"]["median_ms"])
    if sweep_tiles:
        result["sweep"] = sweep(case, x)
    print(f"{case.name:20s} {result['dtype']:8s} M={case.M:6d} K={case.K:5d} N={case.N:5d}  "
          + "  ".join(f"{k}={v['median_ms']:.3f}ms/{v['tflops']:.0f}TF" for k, v in timings.items())
          + f"  triton/matmul={result['triton_vs_matmul']:.3f}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    parser.add_argument("--dtypes", default="bfloat16", help="comma-separated: bfloat16,float32,float16")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--only", default=None, help="comma-separated case names")
    parser.add_argument("--sweep", action="store_true", help="also time the kernel under other tile shapes (SWEEP)")
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU needed: check tiny versions of the cases under TRITON_INTERPRET=1, time nothing")
    args = parser.parse_args()

    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import torch

    selected = [c for c in cases(args.dry_run) if args.only is None or c.name in args.only.split(",")]
    if args.dry_run:
        from minialign.kernels._checks import INTERPRETED

        if not INTERPRETED:  # triton was imported before this script could set it
            print("--dry-run needs TRITON_INTERPRET=1 set before triton is imported: "
                  "TRITON_INTERPRET=1 python benchmarks/gemm.py --dry-run")
            sys.exit(2)
        for case in selected:
            x = make_inputs(case, "cpu", torch.float32)
            check(case, x, torch.float32)
            full = next(c for c in cases(False) if c.name == case.name)
            print(f"dry run ok: {case.name} (tiny M={case.M} K={case.K} N={case.N}); full size "
                  f"M={full.M} K={full.K} N={full.N}: {full.flops / 1e9:.1f} GFLOP, {full.epilogue}")
        return
    if not torch.cuda.is_available():
        print("benchmarks/gemm.py: no CUDA device; nothing timed, nothing written (try --dry-run)")
        return

    import triton

    from common import gpu_device_name, machine, write_json

    results = [run_case(case, getattr(torch, name), not args.no_compile, args.sweep)
               for name in args.dtypes.split(",") for case in selected]
    write_json(args.out, dict(
        op="gemm", device=gpu_device_name(), machine=machine(), triton=triton.__version__,
        flops_formula="2 * M * N * K", target="bert_ffn_up: triton (bias + gelu) within 10% of torch_matmul on H100",
        results=results))


if __name__ == "__main__":
    main()
