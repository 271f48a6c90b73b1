"""One align-base image (289x289) through the NumPy vision tower vs transformers on torch CPU.

All run in this process, on the same weights and input, with torch limited to as many threads
as minialign uses (``num_threads()`` of minialign/backends/numpy.py: all cores, or
$MINIALIGN_NUM_THREADS; NumPy's BLAS uses all cores too). Reports the ratio of minialign's fast
``numpy`` backend to torch (target: <= 1.5x) and where its time goes by layer type, and times
the ``reference`` backend (the plain math, what the fast one is tested against) beside them,
with fewer repeats (``--reference-repeats``): the price of the lesson, and what the fast
backend's tricks buy (benchmarks/numpy_backend.py times them one by one).

The ratio is measured twice: from the medians of separate timing runs (``ratio_vs_best_torch``),
and interleaved, torch then minialign in every repeat (``ratio_interleaved``), which is robust to
a machine whose speed drifts during the run (a shared VM does).

Environment worth recording with the result (the JSON does): OPENBLAS_THREAD_TIMEOUT. After each
matrix product OpenBLAS's idle threads spin for a while (by default 2^28 cycles, ~0.1 s) and keep
a core busy, the core minialign's elementwise threads need (see ``parallel_bands`` in
minialign/backends/numpy.py). OpenBLAS reads it once, when NumPy loads it, and minialign leaves
the environment alone, so this script sets it to 16 (~25 us) unless it is already set, before it
imports NumPy, and records whether it did.

    python benchmarks/vision_tower.py [--repeats 15] [--reference-repeats 3] \
        [--out benchmarks/results/vision_tower_cpu.json]
    python benchmarks/vision_tower.py --repeats 1 --reference-repeats 1 --image-size 64   # a quick check of the script
"""

from __future__ import annotations

import os

# Before NumPy loads OpenBLAS, which reads it once (see benchmarks/common.py).
OPENBLAS_GIVEN = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

import argparse  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from common import TimedOps, interleaved_ratio, machine, openblas_thread_timeout, timeit, write_json  # noqa: E402
from reference import randomize_  # noqa: E402  (the tests' non-trivial weights, shared on purpose)

# Which layer type each backend op belongs to, for the split. The fused ops carry their batchnorm
# (folded into the weights) and SiLU; the unfused run (Unfused below) times those apart.
LAYER_TYPES = {
    "pointwise_conv": "1x1 convs",
    "depthwise_conv2d": "depthwise conv",
    "squeeze_excite_gate": "squeeze-excitation",
    "bias_act": "BN/activation",
    "conv2d": "stem conv",
    "global_pool": "pooling (and, unfused, the SE means)",
}
ENVIRONMENT = ("MINIALIGN_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


class Unfused:
    """A backend whose fused ops are spelled out, each part called through ``ops`` (a TimedOps),
    so the split can time the convolutions, their epilogues (bias = folded BN, SiLU, residual)
    and the squeeze-excitation mean apart."""

    def __init__(self, ops):
        self.ops = ops

    def __getattr__(self, name):
        return getattr(self.ops, name)

    def conv2d(self, x, weight, stride, padding, *, bias=None, activation=None):
        return self.ops.bias_act(self.ops.conv2d(x, weight, stride, padding), bias, activation)

    def pointwise_conv(self, x, weight, bias=None, *, activation=None, input_scale=None, residual=None):
        y = self.ops.pointwise_conv(x, weight, input_scale=input_scale)  # the SE gate stays inside
        return self.ops.bias_act(y, bias, activation, residual)

    def depthwise_conv2d(self, x, weight, stride, padding, *, bias=None, activation=None, return_means=False):
        y = self.ops.bias_act(self.ops.depthwise_conv2d(x, weight, stride, padding), bias, activation)
        return (y, self.ops.global_pool(y, "mean")) if return_means else y


def split_by_layer_type(model, x, ops, repeats: int, *, unfused: bool = False) -> tuple[dict[str, float], float]:
    """Seconds per forward by layer type, and the forward's median total, with every op timed."""
    timed = TimedOps(ops)
    model.ops = Unfused(timed) if unfused else timed
    totals = []
    for _ in range(repeats):
        totals.append(timeit(lambda: model(x), repeats=1, warmup=0)["median_s"])
    split: dict[str, float] = {}
    for op, seconds in timed.totals.items():
        kind = LAYER_TYPES.get(op, op)
        split[kind] = split.get(kind, 0.0) + seconds / repeats
    return dict(sorted(split.items(), key=lambda kv: -kv[1])), float(np.median(totals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--reference-repeats", type=int, default=3,
                        help="timed forwards of the (slow) reference backend")
    parser.add_argument("--image-size", type=int, default=289)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    args = parser.parse_args()

    import torch
    from transformers import AlignVisionConfig as HFConfig
    from transformers import AlignVisionModel as HFModel

    from minialign.backends import get_ops
    from minialign.config import AlignVisionConfig
    from minialign.vision_model import AlignVisionModel

    numpy_ops, reference_ops = get_ops("numpy"), get_ops("reference")
    torch.set_num_threads(numpy_ops.num_threads())  # the same number of threads as minialign's ops
    # align-base architecture with the tests' random non-trivial weights. Not init defaults: those
    # drive activations towards zero, into float32 denormals, which slow every CPU op down.
    theirs = randomize_(HFModel(HFConfig()), seed=0)  # transformers' tower
    state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    ours = AlignVisionModel(AlignVisionConfig(), state, ops=numpy_ops)
    ours_reference = AlignVisionModel(AlignVisionConfig(), state, ops=reference_ops)

    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, args.image_size, args.image_size)).astype(np.float32)
    x_torch = torch.from_numpy(x)
    x_torch_cl = x_torch.contiguous(memory_format=torch.channels_last)
    theirs_cl = HFModel(HFConfig()).eval().to(memory_format=torch.channels_last)
    theirs_cl.load_state_dict(theirs.state_dict())

    with torch.inference_mode():
        t_torch = timeit(lambda: theirs(x_torch), repeats=args.repeats)
        t_torch_cl = timeit(lambda: theirs_cl(x_torch_cl), repeats=args.repeats)
        expected = theirs(x_torch).pooler_output.numpy()
    err = float(np.abs(ours(x).pooler_output - expected).max())
    err_reference = float(np.abs(ours_reference(x).pooler_output - expected).max())
    t_ours = timeit(lambda: ours(x), repeats=args.repeats)
    t_reference = timeit(lambda: ours_reference(x), repeats=args.reference_repeats)

    nchw_faster = t_torch["median_s"] <= t_torch_cl["median_s"]
    torch_best, x_best = (theirs, x_torch) if nchw_faster else (theirs_cl, x_torch_cl)

    def torch_forward():
        with torch.inference_mode():
            return torch_best(x_best)

    interleaved = interleaved_ratio(lambda: ours(x), torch_forward, repeats=args.repeats)

    split, _ = split_by_layer_type(ours, x, numpy_ops, args.repeats)
    split_unfused, t_unfused = split_by_layer_type(ours, x, numpy_ops, args.repeats, unfused=True)
    ours.ops = numpy_ops
    accounted = sum(split.values())

    best_torch = min(t_torch["median_s"], t_torch_cl["median_s"])
    write_json(args.out, {
        "benchmark": "vision tower, align-base, one image",
        "image_size": args.image_size,
        "machine": machine(),
        "threads": numpy_ops.num_threads(),
        "environment": {name: os.environ.get(name) for name in ENVIRONMENT},
        "openblas_thread_timeout": openblas_thread_timeout(OPENBLAS_GIVEN),
        "minialign_numpy": t_ours,
        # The plain-math backend, fewer repeats: the price of the lesson.
        "minialign_reference": t_reference,
        "ratio_reference_over_numpy": t_reference["median_s"] / t_ours["median_s"],
        "ratio_reference_vs_best_torch": t_reference["median_s"] / best_torch,
        "transformers_torch_nchw": t_torch,
        "transformers_torch_channels_last": t_torch_cl,
        "ratio_vs_best_torch": t_ours["median_s"] / best_torch,
        "ratio_interleaved": interleaved,
        "target_ratio": 1.5,
        "pooler_output_max_abs_diff": err,
        "reference_pooler_output_max_abs_diff": err_reference,
        "minialign_split_s": split,
        "minialign_split_fraction": {k: v / accounted for k, v in split.items()},
        # The same forward with the fused ops spelled out (conv, then bias_act, then the SE mean
        # as a pooling, each called on its own): slower, but it splits every layer type.
        "minialign_unfused_forward_s": t_unfused,
        "minialign_split_unfused_s": split_unfused,
    })


if __name__ == "__main__":
    main()
