"""Fused depthwise conv + BN + SiLU (+ spatial sums) in Triton vs torch eager and torch.compile.

On align-base's depthwise shapes at batch 64 (the issue's list), in bfloat16 (add float32 with
``--dtypes bfloat16 float32``). Every kernel output is first checked against the tests' torch
reference (float64), then timed with ``triton.testing.do_bench`` (median, 20th/80th percentiles)
next to:

- torch eager, channels_last: ZeroPad2d (stride-2 blocks) -> conv2d(groups=C) -> batch_norm -> silu,
  as transformers runs a block (the issue's baseline: target >= 1.5x faster), and the same plus the
  spatial mean that squeeze-excitation takes (which the kernel's sums replace);
- torch.compile of both (Inductor, static shapes).

Bandwidth is effective: bytes of x read once plus bytes of y written once (the formula is in
``bytes_moved``), divided by the median time. Target on H100: >= 2.0 TB/s on every shape.

    python benchmarks/depthwise_conv.py --out benchmarks/results/depthwise_conv_gpu.json
    python benchmarks/depthwise_conv.py --dry-run    # no GPU: checks one tiny shape under the interpreter

Without CUDA (and without --dry-run) it prints a message and exits 0, writing nothing.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

# align-base's depthwise convs, as listed in the issue (C = expanded width, H = W = input size).
# The stride-2 shape uses transformers' adjusted padding, the default for the tower's blocks.
SHAPES = [
    dict(C=192, H=73, k=3, stride=1),
    dict(C=288, H=37, k=5, stride=1),
    dict(C=960, H=19, k=5, stride=1),
    dict(C=2304, H=10, k=3, stride=1),
    dict(C=192, H=145, k=3, stride=2),
]
BANDWIDTH_TARGET_GBS = 2000.0  # issue: >= 2.0 TB/s effective on H100
SPEEDUP_TARGET = 1.5  # issue: >= 1.5x torch eager conv -> BN -> SiLU


def output_size(size: int, k: int, stride: int, before: int, after: int) -> int:
    return (size + before + after - k) // stride + 1


def bytes_moved(B: int, H: int, W: int, Ho: int, Wo: int, C: int, itemsize: int) -> int:
    """Effective bytes: the input read once plus the output written once.

    Not counted (< 0.1% here): the [k, k, C] taps, scale and shift (float32), the [B, C] float32 sums.
    """
    return B * H * W * C * itemsize + B * Ho * Wo * C * itemsize


def describe(shape: dict, batch: int, dtype) -> dict:
    """Padding, output size and byte count of one benchmark shape."""
    from minialign.kernels.depthwise_conv import _block_sizes
    from minialign.vision_model import depthwise_padding

    C, H, k, stride = shape["C"], shape["H"], shape["k"], shape["stride"]
    padding = depthwise_padding(k, stride, adjust=True)
    Ho = output_size(H, k, stride, padding[0], padding[1])
    Wo = output_size(H, k, stride, padding[2], padding[3])
    itemsize = dtype.itemsize
    rows, run, block_r, block_c, num_warps = _block_sizes(Ho, Wo, C, k, stride)
    return dict(B=batch, H=H, W=H, C=C, k=k, stride=stride, padding=list(padding), Ho=Ho, Wo=Wo,
                dtype=str(dtype).replace("torch.", ""), bytes=bytes_moved(batch, H, H, Ho, Wo, C, itemsize),
                ROWS=rows, RUN=run, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=num_warps)


def make_inputs(desc: dict, dtype, device: str, seed: int = 0):
    """x, weight, bn (the tests' random case) on ``device``, and the folded scale/shift."""
    from test_depthwise_conv import fold_batch_norm, random_case

    x, w, bn = random_case(seed, desc["B"], desc["H"], desc["W"], desc["C"], desc["k"], dtype=dtype, device=device)
    scale, shift = fold_batch_norm(bn)
    return x, w, bn, scale, shift


def check(desc: dict, x, w, bn, scale, shift) -> None:
    """The kernel's y and sums against the tests' torch reference in float64 (assert_close)."""
    import torch
    from helpers import assert_close
    from test_depthwise_conv import MEAN_TOLERANCE, Y_TOLERANCES, torch_depthwise_bn_silu

    from minialign.kernels.depthwise_conv import depthwise_conv_bn_silu

    kw = dict(stride=desc["stride"], padding=tuple(desc["padding"]))
    y, sums = depthwise_conv_bn_silu(x, w, scale, shift, **kw)
    bn64 = {n: (v.double() if torch.is_tensor(v) else v) for n, v in bn.items()}
    y_ref, mean_ref = torch_depthwise_bn_silu(x.double(), w.double(), bn64, **kw)
    assert tuple(y.shape) == (desc["B"], desc["Ho"], desc["Wo"], desc["C"]), (y.shape, desc)
    assert_close(y, y_ref, **Y_TOLERANCES[x.dtype], name=f"y {desc}")
    assert_close(sums.sum(1) / (desc["Ho"] * desc["Wo"]), mean_ref, **MEAN_TOLERANCE, name=f"mean {desc}")


def bench_shape(desc: dict, dtype, compile_: bool) -> dict:
    import torch
    from common import gpu_time_ms
    from test_depthwise_conv import torch_depthwise_bn_silu

    from minialign.kernels.depthwise_conv import depthwise_conv_bn_silu

    x, w, bn, scale, shift = make_inputs(desc, dtype, "cuda")
    check(desc, x, w, bn, scale, shift)

    # torch as a bf16 model runs it: weights and BN buffers in the activation dtype, conv weight
    # in channels_last like model.to(memory_format=torch.channels_last).
    w_t = w.contiguous(memory_format=torch.channels_last)
    bn_t = {n: (v.to(dtype) if torch.is_tensor(v) else v) for n, v in bn.items()}
    kw = dict(stride=desc["stride"], padding=tuple(desc["padding"]))
    fns = {
        "triton": lambda: depthwise_conv_bn_silu(x, w, scale, shift, **kw),
        "torch_eager": lambda: torch_depthwise_bn_silu(x, w_t, bn_t, **kw, with_mean=False),
        "torch_eager_with_mean": lambda: torch_depthwise_bn_silu(x, w_t, bn_t, **kw, with_mean=True),
    }
    if compile_:
        compiled = torch.compile(torch_depthwise_bn_silu, dynamic=False)
        fns["torch_compile"] = lambda: compiled(x, w_t, bn_t, **kw, with_mean=False)
        fns["torch_compile_with_mean"] = lambda: compiled(x, w_t, bn_t, **kw, with_mean=True)

    result = dict(desc)
    with torch.no_grad():
        for name, fn in fns.items():
            fn()  # compile / JIT outside the timing
            torch.cuda.synchronize()
            t = gpu_time_ms(fn)
            result[name] = dict(t, GBps=desc["bytes"] / (t["median_ms"] * 1e-3) / 1e9)
    ms = result["triton"]["median_ms"]
    for name in fns:
        if name != "triton":
            result[f"speedup_vs_{name}"] = result[name]["median_ms"] / ms
    result["meets_bandwidth_target"] = result["triton"]["GBps"] >= BANDWIDTH_TARGET_GBS
    result["meets_speedup_target"] = result["speedup_vs_torch_eager"] >= SPEEDUP_TARGET
    return result


def dry_run(batch: int) -> None:
    """No timing: the shape/byte bookkeeping of every benchmark shape, and a correctness check of
    one tiny shape (on the interpreter when there is no GPU)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    for shape in SHAPES:
        d = describe(shape, batch, torch.bfloat16)
        print(f"C={d['C']:5d} H={d['H']:4d} k{d['k']} s{d['stride']} pad={tuple(d['padding'])} -> "
              f"{d['Ho']}x{d['Wo']}  {d['bytes'] / 1e6:8.1f} MB  {d['BLOCK_R']} patches of {d['ROWS']}x{d['RUN']} "
              f"x {d['BLOCK_C']} channels a program")
    for shape in (dict(C=70, H=9, k=3, stride=1), dict(C=5, H=11, k=5, stride=2)):
        d = describe(shape, 2, torch.float32)
        check(d, *make_inputs(d, torch.float32, device))
        print(f"dry run: {d['B']}x{d['H']}x{d['W']}x{d['C']} k{d['k']} s{d['stride']} on {device}: "
              "matches the torch reference")


def main() -> None:
    from common import kernel_bench_parser, should_time_on_gpu

    parser = kernel_bench_parser(__doc__)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    if not should_time_on_gpu("depthwise_conv", args.dry_run):
        if args.dry_run:
            dry_run(args.batch)
        return

    import torch

    from common import gpu_device_name, machine, write_json

    import triton

    import torch._dynamo

    for limit in ("recompile_limit", "cache_size_limit"):  # one compiled graph per shape and variant
        if hasattr(torch._dynamo.config, limit):
            setattr(torch._dynamo.config, limit, 64)
    results = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for shape in SHAPES:
            r = bench_shape(describe(shape, args.batch, dtype), dtype, compile_=not args.no_compile)
            print(f"{r['dtype']:8s} C={r['C']:5d} H={r['H']:4d} k{r['k']} s{r['stride']}: triton "
                  f"{r['triton']['median_ms'] * 1e3:7.1f} us {r['triton']['GBps']:6.0f} GB/s, "
                  f"{r['speedup_vs_torch_eager']:.2f}x eager"
                  + (f", {r['speedup_vs_torch_compile_with_mean']:.2f}x compile(+mean)" if not args.no_compile else ""),
                  file=sys.stderr)
            results.append(r)
            torch.cuda.empty_cache()  # the next shape's float64 check needs room
    write_json(args.out, dict(
        benchmark="depthwise_conv_bn_silu", device=gpu_device_name(), machine=machine(), triton=triton.__version__,
        bytes_formula="B*H*W*C*itemsize (x read once) + B*Ho*Wo*C*itemsize (y written once)",
        targets=dict(GBps=BANDWIDTH_TARGET_GBS, speedup_vs_torch_eager=SPEEDUP_TARGET),
        results=results,
    ))


if __name__ == "__main__":
    main()
