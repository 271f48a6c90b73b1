"""Batchnorm + SiLU (and batchnorm + residual add) in Triton vs torch eager and torch.compile;
also the squeeze-excitation gate.

Cases, at batch 64, in bfloat16 (add float32 with ``--dtypes bfloat16 float32``):

- ``bn_silu``: [64, 72, 72, 384], the shape the bandwidth target is stated on (target on H100:
  >= 2.5 TB/s; torch.compile was measured at 1.97 TB/s on that size), plus align-base's stem
  output and two expanded widths;
- ``bn_residual``: MBConv's projection BN (no activation) + the skip connection, on two
  align-base block outputs;
- ``se_gate``: the gate from [64, C] pixel sums with align-base's widest (C, S) pairs. It is tiny
  (a few MB of L2-resident weights; microseconds): its numbers are latencies, for completeness.
  Weights in float32 for both sides (the gate is float32 whatever the model's dtype).

Every kernel output is first checked against the tests' torch reference (float32, from the same
inputs), then timed with ``triton.testing.do_bench`` (median, 20th/80th percentiles) next to
torch eager on channels_last tensors (F.batch_norm -> F.silu (+ residual), with the BN
parameters in the activation dtype, as a bf16 model runs it) and torch.compile of the same
function (Inductor, static shapes). Bandwidth is effective: the formulas are in
``bn_bytes`` / ``se_bytes``, divided by the median time.

    python benchmarks/batchnorm_silu.py --out benchmarks/results/batchnorm_silu_gpu.json
    python benchmarks/batchnorm_silu.py --dry-run    # no GPU: checks tiny shapes under the interpreter

Without CUDA (and without --dry-run) it prints a message and exits 0, writing nothing.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

# [B, H, W, C] channels-last activations, align-base at 289x289 with transformers' padding
# (docs/block_table.md; TensorFlow's "same" padding would give 145, 73, 19, 10): stem 144x144x64;
# stage 2 runs at 72x72 with 48 output / 288 expanded channels; stage 7 at 9x9 with 3840 expanded.
BN_SILU_SHAPES = [
    (64, 72, 72, 384),  # the shape the bandwidth target is stated on
    (64, 144, 144, 64),  # stem conv output
    (64, 72, 72, 288),  # stage 2, expanded
    (64, 9, 9, 3840),  # stage 7, expanded
]
BN_RESIDUAL_SHAPES = [
    (64, 72, 72, 48),  # stage 2 block output
    (64, 18, 18, 224),  # stage 5 block output
]
# (B, C, S, hw): expanded width C, squeezed width S = in_dim / 4, pixels per image.
SE_SHAPES = [
    (64, 3840, 160, 9 * 9),  # stage 7
    (64, 2304, 96, 9 * 9),  # stage 6
    (64, 288, 12, 72 * 72),  # stage 2
]
BANDWIDTH_TARGET_GBS = 2500.0  # the target: >= 2.5 TB/s on H100 for BN + SiLU


def bn_bytes(shape, itemsize: int, residual: bool) -> int:
    """Effective bytes: x read once, y written once, the residual read once.

    Not counted (< 0.01%): scale and shift, 2 * C float32 values.
    """
    n = 1
    for d in shape:
        n *= d
    return n * itemsize * (3 if residual else 2)


def se_bytes(B: int, C: int, S: int, w_itemsize: int) -> int:
    """sums read + gate written (float32), plus both weight matrices and biases read once (they
    are re-read by every image, but from L2)."""
    return 2 * B * C * 4 + (2 * C * S + S + C) * w_itemsize


def make_bn_case(shape, dtype, device: str, residual: bool, seed: int = 0):
    """x in NCHW channels_last (and its NHWC view for the kernel), BN params, optional residual."""
    import torch
    from test_batchnorm_silu import random_bn

    B, H, W, C = shape
    g = torch.Generator(device=device).manual_seed(seed)
    cl = torch.channels_last
    x = (3 * torch.randn(B, C, H, W, generator=g, device=device)).to(dtype).contiguous(memory_format=cl)
    res = None
    if residual:
        res = torch.randn(B, C, H, W, generator=g, device=device).to(dtype).contiguous(memory_format=cl)
    params = random_bn(C, seed, device)  # weight, bias, mean, var (float32)
    return x, res, params


def check_bn(x, res, params, eps: float, activation) -> None:
    """The kernel's output against the tests' torch reference in float32 (assert_close)."""
    import torch
    from helpers import assert_close
    from test_batchnorm_silu import TOL, torch_bn_act

    from minialign.kernels.batchnorm_silu import batchnorm_act, bn_scale_shift

    nhwc = lambda t: None if t is None else t.permute(0, 2, 3, 1)  # noqa: E731 (free: channels_last)
    y = batchnorm_act(nhwc(x), *bn_scale_shift(*params, eps), activation=activation, residual=nhwc(res))
    expected = torch_bn_act(x.float(), *params, eps, activation, None if res is None else res.float())
    assert_close(y, nhwc(expected), **TOL[x.dtype], name=f"batchnorm_act {tuple(y.shape)} {x.dtype}")
    del y, expected
    if x.is_cuda:
        torch.cuda.empty_cache()


def bench_bn(shape, dtype, residual: bool, compile_: bool) -> dict:
    import torch
    from common import time_candidates
    from test_batchnorm_silu import torch_bn_act

    from minialign.kernels.batchnorm_silu import batchnorm_act, bn_scale_shift

    eps = 1e-3  # align-base's batch_norm_eps
    activation = None if residual else "silu"
    x, res, params = make_bn_case(shape, dtype, "cuda", residual)
    check_bn(x, res, params, eps, activation)

    scale, shift = bn_scale_shift(*params, eps)  # folded once per model load, not per call
    x_k, res_k = x.permute(0, 2, 3, 1), None if res is None else res.permute(0, 2, 3, 1)
    out = torch.empty_like(x_k)
    params_t = [p.to(dtype) for p in params]  # a bf16 model's BN buffers are bf16
    fns = {
        "triton": lambda: batchnorm_act(x_k, scale, shift, activation=activation, residual=res_k, out=out),
        "torch_eager": lambda: torch_bn_act(x, *params_t, eps, activation, res),
    }
    if compile_:
        import torch._dynamo

        torch._dynamo.reset()  # a fresh graph per case: no recompile limit, no dynamic shapes
        compiled = torch.compile(torch_bn_act, dynamic=False)
        fns["torch_compile"] = lambda: compiled(x, *params_t, eps, activation, res)

    n_bytes = bn_bytes(shape, dtype.itemsize, residual)
    result = dict(case="bn_residual" if residual else "bn_silu", shape=list(shape), layout="NHWC (channels_last)",
                  dtype=str(dtype).replace("torch.", ""), bytes=n_bytes)
    result.update(time_candidates(fns, n_bytes))
    if not residual:
        result["meets_bandwidth_target"] = result["triton"]["GBps"] >= BANDWIDTH_TARGET_GBS
    return result  # the case's tensors die with this frame; the caller empties the CUDA cache


def make_se_case(B, C, S, hw, device: str, seed: int = 0):
    import torch
    from test_se_gate import random_se

    g = torch.Generator(device=device).manual_seed(seed)
    sums = hw * torch.randn(B, C, generator=g, device=device)
    return sums, [t.to(device) for t in random_se(C, S, seed)]


def check_se(sums, hw, weights) -> None:
    from helpers import assert_close
    from test_se_gate import TOL, torch_se_gate

    from minialign.kernels.se_gate import se_gate

    assert_close(se_gate(sums, hw, *weights), torch_se_gate(sums, hw, *weights), **TOL,
                 name=f"se_gate {tuple(sums.shape)} S={weights[0].shape[0]}")


def bench_se(B, C, S, hw, compile_: bool) -> dict:
    import torch
    from common import time_candidates
    from test_se_gate import torch_se_gate

    from minialign.kernels.se_gate import se_gate

    sums, weights = make_se_case(B, C, S, hw, "cuda")
    check_se(sums, hw, weights)
    fns = {
        "triton": lambda: se_gate(sums, hw, *weights),
        "torch_eager": lambda: torch_se_gate(sums, hw, *weights),
    }
    if compile_:
        import torch._dynamo

        torch._dynamo.reset()
        compiled = torch.compile(torch_se_gate, dynamic=False)
        fns["torch_compile"] = lambda: compiled(sums, hw, *weights)
    n_bytes = se_bytes(B, C, S, 4)
    result = dict(case="se_gate", B=B, C=C, S=S, hw=hw, dtype="float32", bytes=n_bytes)
    result.update(time_candidates(fns, n_bytes))
    return result


def dry_run(only) -> None:
    """No timing: the byte bookkeeping of every benchmark case, and correctness checks on tiny
    shapes (on the interpreter when there is no GPU)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if only in (None, "bn_silu", "bn_residual"):
        for shape in BN_SILU_SHAPES:
            print(f"bn_silu     {shape}: {bn_bytes(shape, 2, False) / 1e6:8.1f} MB in bfloat16")
        for shape in BN_RESIDUAL_SHAPES:
            print(f"bn_residual {shape}: {bn_bytes(shape, 2, True) / 1e6:8.1f} MB in bfloat16")
        for shape, residual in (((2, 5, 7, 130), False), ((1, 3, 3, 48), True)):
            x, res, params = make_bn_case(shape, torch.float32, device, residual)
            check_bn(x, res, params, 1e-3, None if residual else "silu")
            case = "bn_residual" if residual else "bn_silu"
            print(f"dry run: {case} {shape} on {device}: matches the torch reference")
    if only in (None, "se_gate"):
        for B, C, S, hw in SE_SHAPES:
            print(f"se_gate B={B} C={C} S={S}: {se_bytes(B, C, S, 4) / 1e6:6.2f} MB")
        sums, weights = make_se_case(2, 37, 12, 49, device)
        check_se(sums, 49, weights)
        print(f"dry run: se_gate B=2 C=37 S=12 on {device}: matches the torch reference")


def main() -> None:
    from common import kernel_bench_parser, should_time_on_gpu

    parser = kernel_bench_parser(__doc__)
    parser.add_argument("--only", choices=["bn_silu", "bn_residual", "se_gate"], default=None)
    args = parser.parse_args()

    if not should_time_on_gpu("batchnorm_silu", args.dry_run):
        if args.dry_run:
            dry_run(args.only)
        return

    import torch

    import triton
    from common import gpu_device_name, machine, write_json

    compile_ = not args.no_compile
    results = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for residual, shapes in ((False, BN_SILU_SHAPES), (True, BN_RESIDUAL_SHAPES)):
            if args.only not in (None, "bn_residual" if residual else "bn_silu"):
                continue
            for shape in shapes:
                r = bench_bn(shape, dtype, residual, compile_)
                print(f"{r['case']:11s} {r['dtype']:8s} {shape}: triton {r['triton']['median_ms'] * 1e3:7.1f} us "
                      f"{r['triton']['GBps']:6.0f} GB/s, eager {r['torch_eager']['GBps']:6.0f} GB/s"
                      + (f", compile {r['torch_compile']['GBps']:6.0f} GB/s" if compile_ else ""), file=sys.stderr)
                results.append(r)
                torch.cuda.empty_cache()  # the next shape's float64 check needs room
    if args.only in (None, "se_gate"):
        for B, C, S, hw in SE_SHAPES:
            r = bench_se(B, C, S, hw, compile_)
            print(f"se_gate     B={B} C={C} S={S}: triton {r['triton']['median_ms'] * 1e3:6.1f} us, "
                  f"eager {r['torch_eager']['median_ms'] * 1e3:6.1f} us"
                  + (f", compile {r['torch_compile']['median_ms'] * 1e3:6.1f} us" if compile_ else ""), file=sys.stderr)
            results.append(r)
    write_json(args.out, dict(
        benchmark="batchnorm_silu", device=gpu_device_name(), machine=machine(), triton=triton.__version__,
        bytes_formula=dict(
            bn_silu="B*H*W*C*itemsize (x read) + B*H*W*C*itemsize (y written)",
            bn_residual="3 * B*H*W*C*itemsize (x and residual read, y written)",
            se_gate="2*B*C*4 (sums read, gate written) + (2*C*S + S + C)*4 (weights and biases read once)",
        ),
        targets=dict(bn_silu_GBps=BANDWIDTH_TARGET_GBS),
        results=results,
    ))


if __name__ == "__main__":
    main()
