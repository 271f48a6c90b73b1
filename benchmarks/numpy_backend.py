"""The NumPy backend's tricks, one by one: each fast op against the reference op it replaces.

``minialign/backends/numpy.py`` computes what ``minialign/backends/reference.py`` computes, faster;
its module docstring lists the tricks. Each case below times one trick on align-base's real
shapes (one 289x289 image for the vision tower, a batch of 64 captions of 64 tokens for BERT),
the reference op and the fast op called in alternation in every repeat (``interleaved_times``),
after checking that both give the same numbers:

- depthwise_conv2d: one einsum over a strided view of runs of pixels x channels, instead of k*k
  multiply-adds into an accumulator (the 144x144, 72x72 and 36x36 layers, with the fused bias,
  SiLU and channel means the model asks for);
- bias_act: the conv epilogue (bias + SiLU) in cache-sized bands of rows on every core
  (``parallel_bands``), instead of whole-array passes on one; the reference writes it
  ``silu(y + bias)``;
- gelu: erf's polynomial on 128K-element blocks, on every core, instead of ~30 passes over the
  whole [4096, 3072] BERT activation;
- linear: [B*T, in] @ [in, out], one large BLAS call, instead of B small ones;
- pointwise_conv with a squeeze-excitation gate: the gate scales the weight's columns
  (a [Cout, Cin] pass per image) instead of the activation's rows ([H*W, Cin]);
- conv2d (the stem): im2col, one [Ho*Wo, Cin*k*k] matrix product, instead of k*k small ones.

Both backends are given the same number of threads the model runs with (``num_threads()``:
all cores, or $MINIALIGN_NUM_THREADS; the reference uses threads only inside BLAS).

    python benchmarks/numpy_backend.py --out benchmarks/results/numpy_backend.json
    python benchmarks/numpy_backend.py --table benchmarks/results/numpy_backend.json   # the docstring's table
    python benchmarks/numpy_backend.py --dry-run     # tiny shapes: checks the numbers, times nothing
"""

from __future__ import annotations

import os

# Before NumPy loads OpenBLAS, which reads it once (see benchmarks/common.py).
OPENBLAS_GIVEN = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from common import interleaved_times, machine, openblas_thread_timeout, write_json  # noqa: E402
from helpers import TOLERANCES, assert_close  # noqa: E402

from minialign.backends import get_ops  # noqa: E402

fast, plain = get_ops("numpy"), get_ops("reference")
ENVIRONMENT = ("MINIALIGN_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


@dataclass(frozen=True)
class Case:
    name: str
    trick: str  # the trick of numpy.py's docstring that this case measures
    op: str  # the op called on both backends
    shape: str  # what the table shows
    # (rng, tiny) -> (numpy backend call, reference call), each returning an array or a tuple of them
    make: Callable[[np.random.Generator, bool], tuple[Callable, Callable]]


def _normal(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def depthwise(H: int, C: int, k: int, stride: int, tiny_hc=(13, 8)) -> Callable:
    """A depthwise layer of an MBConv block as the model calls it: bias (folded batchnorm), SiLU
    and the channel means for squeeze-excitation, "same" padding at stride 1."""

    def make(rng, tiny):
        h, c = tiny_hc if tiny else (H, C)
        x, w, b = _normal(rng, 1, h, h, c), _normal(rng, c, 1, k, k, scale=1 / k), _normal(rng, c, scale=0.1)
        pad = (k // 2,) * 4 if stride == 1 else (k // 2 - 1, k // 2, k // 2 - 1, k // 2)
        kwargs = dict(bias=b, activation="silu", return_means=True)
        return (lambda: fast.depthwise_conv2d(x, w, stride, pad, **kwargs),
                lambda: plain.depthwise_conv2d(x, w, stride, pad, **kwargs))

    return make


def bias_silu(rng, tiny):
    y, b = _normal(rng, 1, *((9, 9, 24) if tiny else (144, 144, 192))), _normal(rng, 24 if tiny else 192, scale=0.1)
    return lambda: fast.bias_act(y, b, "silu"), lambda: plain.silu(y + b)


def gelu(rng, tiny):
    x = _normal(rng, *((37, 53) if tiny else (4096, 3072)))
    return lambda: fast.gelu(x), lambda: plain.gelu(x)


def linear(rng, tiny):
    B, T, K, N = (3, 5, 16, 24) if tiny else (64, 64, 768, 3072)
    x, w, b = _normal(rng, B, T, K), _normal(rng, N, K, scale=K ** -0.5), _normal(rng, N, scale=0.1)
    return lambda: fast.linear(x, w, b), lambda: plain.linear(x, w, b)


def gated_pointwise(rng, tiny):
    H, Cin, Cout = (7, 24, 8) if tiny else (72, 288, 48)
    x, w = _normal(rng, 1, H, H, Cin), _normal(rng, Cout, Cin, 1, 1, scale=Cin ** -0.5)
    gate = rng.uniform(0, 1, (1, Cin)).astype(np.float32)
    return (lambda: fast.pointwise_conv(x, w, input_scale=gate),
            lambda: plain.pointwise_conv(x, w, input_scale=gate))


def stem(rng, tiny):
    size, C = (17, 8) if tiny else (289, 64)
    x, w = _normal(rng, 1, size, size, 3), _normal(rng, C, 3, 3, 3, scale=27 ** -0.5)
    pad = (0, 1, 0, 1)  # transformers' ZeroPad2d((0, 1, 0, 1)) before the 3x3 stride-2 stem
    return lambda: fast.conv2d(x, w, 2, pad), lambda: plain.conv2d(x, w, 2, pad)


CASES = [
    Case("depthwise_144x144x64", "depthwise einsum over strided runs", "depthwise_conv2d",
         "[1, 144, 144, 64], 3x3, stride 1 (block 0)", depthwise(144, 64, 3, 1)),
    Case("depthwise_144x144x32", "depthwise einsum over strided runs", "depthwise_conv2d",
         "[1, 144, 144, 32], 3x3, stride 1 (blocks 1-3)", depthwise(144, 32, 3, 1)),
    Case("depthwise_144x144x192_s2", "depthwise einsum over strided runs", "depthwise_conv2d",
         "[1, 144, 144, 192], 3x3, stride 2 (block 4)", depthwise(144, 192, 3, 2, tiny_hc=(14, 8))),
    Case("depthwise_72x72x288", "depthwise einsum over strided runs", "depthwise_conv2d",
         "[1, 72, 72, 288], 3x3, stride 1 (blocks 5-10)", depthwise(72, 288, 3, 1)),
    Case("depthwise_36x36x480_k5", "depthwise einsum over strided runs", "depthwise_conv2d",
         "[1, 36, 36, 480], 5x5, stride 1 (blocks 12-17)", depthwise(36, 480, 5, 1)),
    Case("bias_silu_144x144x192", "banded threads", "bias_act", "[1, 144, 144, 192] + [192], SiLU", bias_silu),
    Case("gelu_4096x3072", "blockwise erf/gelu", "gelu", "[4096, 3072]", gelu),
    Case("linear_bert_ffn", "one large matrix product", "linear", "[64, 64, 768] x [3072, 768] + [3072]", linear),
    Case("pointwise_gated_72x72x288", "gate on the weight", "pointwise_conv",
         "[1, 72, 72, 288] x [48, 288], SE gate [1, 288]", gated_pointwise),
    Case("stem_289", "im2col stem", "conv2d", "[1, 289, 289, 3] x [64, 3, 3, 3], stride 2", stem),
]


def check(case: Case, ours, theirs) -> float:
    """The fast op gives the reference's numbers (float32 tolerance, tests/helpers.py); returns
    the max abs difference."""
    ours, theirs = (r if isinstance(r, tuple) else (r,) for r in (ours, theirs))
    worst = 0.0
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert_close(a, b, **TOLERANCES["float32"], name=f"{case.name}[{i}]")
        worst = max(worst, float(np.abs(np.asarray(a, np.float64) - b).max()))
    return worst


def run_case(case: Case, *, tiny: bool, repeats: int, pause_s: float) -> dict:
    ours, theirs = case.make(np.random.default_rng(0), tiny)
    row = {"name": case.name, "trick": case.trick, "op": case.op, "shape": case.shape,
           "max_abs_diff": check(case, ours(), theirs())}
    if tiny:  # a dry run checks, times nothing
        return {**row, "reference": None, "numpy": None, "speedup": None}
    times = interleaved_times({"reference": theirs, "numpy": ours}, repeats=repeats, pause_s=pause_s)
    row.update(reference=times["reference"], numpy=times["numpy"], speedup=times["ratios"]["reference_over_numpy"])
    print(f"{case.name:28} reference {1e3 * times['reference']['median_s']:9.2f} ms   numpy "
          f"{1e3 * times['numpy']['median_s']:8.2f} ms   x{row['speedup']['median']:.1f}", file=sys.stderr)
    return row


def markdown_table(result: dict) -> str:
    """The table for numpy.py's docstring: op, shape, reference ms, numpy ms, speed-up (the
    median of the per-repeat ratios, so it need not equal the ratio of the two medians)."""
    lines = ["| op | shape | reference ms | numpy ms | speed-up |", "| --- | --- | ---: | ---: | ---: |"]
    for row in result["cases"]:
        if row["reference"] is None:
            raise SystemExit(f"{row['name']}: no timings in this result (a dry run?)")
        lines.append(f"| ``{row['op']}`` | {row['shape']} | {1e3 * row['reference']['median_s']:.1f} | "
                     f"{1e3 * row['numpy']['median_s']:.1f} | {row['speedup']['median']:.1f}x |")
    m = result["machine"]
    lines.append("")
    lines.append(f"({m['processor']}, {m['cpu_count']} cores, {result['threads']} threads, NumPy {m['numpy']}, "
                 f"OPENBLAS_THREAD_TIMEOUT={result['openblas_thread_timeout']['value']}; median of "
                 f"{result['repeats']} interleaved repeats.)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repeats per case")
    parser.add_argument("--pause", type=float, default=0.05,
                        help="seconds before each timed call, for BLAS's idle threads to stop spinning")
    parser.add_argument("--only", default=None, help="comma-separated case names")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes: check every case, time nothing")
    parser.add_argument("--table", metavar="JSON", default=None,
                        help="measure nothing: print the markdown table of a result file written by --out")
    args = parser.parse_args()

    if args.table:
        with open(args.table, encoding="utf-8") as fh:
            print(markdown_table(json.load(fh)))
        return
    names = None if args.only is None else args.only.split(",")
    unknown = set(names or ()) - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; known: {[c.name for c in CASES]}")
    cases = [c for c in CASES if names is None or c.name in names]
    rows = [run_case(c, tiny=args.dry_run, repeats=args.repeats, pause_s=args.pause) for c in cases]
    write_json(args.out, {
        "benchmark": "numpy backend vs reference backend, op by op, align-base shapes",
        "dry_run": args.dry_run,
        "machine": machine(),
        "threads": fast.num_threads(),
        "environment": {name: os.environ.get(name) for name in ENVIRONMENT},
        "openblas_thread_timeout": openblas_thread_timeout(OPENBLAS_GIVEN),
        "repeats": None if args.dry_run else args.repeats,
        "pause_s": args.pause,
        "cases": rows,
    })


if __name__ == "__main__":
    main()
