"""Host time per forward on the Triton backend, with the GPU taken out: what the CPU spends
launching a forward, which bounds its speed when the kernels are short.

No GPU is needed. The model runs on meta tensors (kernels/plan.py's PlanningOps: shapes, no
memory), so every torch op costs its dispatch but computes nothing, and every Triton launch goes
through Triton's real launch path -- argument binding, specialisation, cache lookup, launch
metadata -- down to the compiled kernel's ``run``, which is a stub here (``StubKernel``): the
driver's launch call (a few microseconds per launch on a GPU host) is the one piece not in
the numbers. Timed as this thread's CPU time (``time.thread_time``: on a shared machine the wall
clock also counts the time other processes hold the core), in one run, alternating so that a
drift in the machine's speed hits all alike:

- ``vision``: align-base, 64 images of 289x289, bfloat16: the vision ops as they are, and
  ``vision_per_forward_constants``: as they were before weights were prepared once (the
  depthwise taps permuted and cast, the scale and shift vectors made, the sums divided into
  means, the stem's padding and transpose, all in every forward: ``PerForwardOps``);
- ``text``: align-base, 256 texts of 64 tokens, bfloat16, as it is;
- ``graph_replay_bookkeeping``: what ``GraphedForward`` (minialign/cuda_graphs.py) does per call
  around a replay -- copy the input in, replay, copy the outputs out -- with a replay that does
  nothing: the host time a CUDA-graphed vision forward leaves, less the driver's graph launch.

Each also records how many Triton launches and torch ops one forward makes (tests/launches.py).

    python benchmarks/host_overhead.py --out benchmarks/results/host_overhead_cpu.json
    python benchmarks/host_overhead.py --dry-run      # small shapes, a few repeats: checks the script
    python benchmarks/host_overhead.py --table benchmarks/results/host_overhead_cpu.json   # docs/backends.md's table
"""

from __future__ import annotations

import os

# The kernels are stubbed below the JIT, which then binds and specialises as for a GPU: the
# interpreter would replace that path.
os.environ.pop("TRITON_INTERPRET", None)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from common import machine, write_json  # noqa: E402
from launches import counting  # noqa: E402

IMAGE_BATCH, IMAGE_SIZE, TEXT_BATCH, TEXT_LENGTH = 64, 289, 256, 64
TINY = dict(image_batch=2, image_size=33, text_batch=4, text_length=8)


class StubKernel:
    """A compiled kernel whose launch does nothing: what the JIT finds in its cache."""

    function = packed_metadata = None

    def launch_metadata(self, grid, stream, *args):
        return None

    def run(self, *args):
        return None


@contextlib.contextmanager
def stubbed_kernels():
    """Within: every Triton launch runs the JIT's launch path on a planning target (sm_90a, no
    device) and ends in ``StubKernel.run``. The first launch of a specialisation finds the cache
    empty; the JIT's compile hook then stores a stub under its key instead of compiling."""
    from triton import knobs
    from triton.runtime.driver import driver

    from minialign.kernels import plan
    from minialign.kernels._checks import planning

    class StubDriver(plan._PlanningDriver):
        def __init__(self):
            super().__init__(plan.ARCH_CAPABILITY["sm_90a"])
            self.device = "host-overhead-stub"  # its own cache key: never a real device's kernels

    def store_stub(*, key, fn, compile, **_):
        kernel_cache = fn.jit_function.device_caches[compile["device"]][0]
        kernel_cache[key] = StubKernel()
        return True  # "handled": this first launch does nothing, the next ones find the stub

    previous_driver, previous_hook = driver._active, knobs.runtime.jit_cache_hook
    driver.set_active(StubDriver())
    knobs.runtime.jit_cache_hook = store_stub
    try:
        with planning():
            yield
    finally:
        driver._active, knobs.runtime.jit_cache_hook = previous_driver, previous_hook


def per_forward_ops(planning_ops_class):
    """The vision ops as they were before the weights were prepared once (commit 942b3fd),
    on meta tensors: the baseline of this benchmark."""
    import torch
    import torch.nn.functional as F

    from minialign.kernels.depthwise_conv import depthwise_conv_bn_silu
    from minialign.kernels.se_gate import se_gate

    class PerForwardOps(planning_ops_class):
        def prepare_weight(self, array, op, argument):
            return self.from_numpy(array)  # every weight in the compute dtype, as checkpointed

        def conv2d(self, x, weight, stride=1, padding=(0, 0, 0, 0), *, bias=None, activation=None):
            top, bottom, left, right = padding
            y = F.conv2d(F.pad(self.nhwc_to_nchw(x), (left, right, top, bottom)), weight, bias, stride=stride)
            return (F.silu(y) if activation == "silu" else y).permute(0, 2, 3, 1).contiguous()

        def depthwise_conv2d(self, x, weight, stride=1, padding=(0, 0, 0, 0), *, bias=None, activation=None,
                             return_means=False):
            C = x.shape[-1]
            ones = torch.ones(C, device=x.device, dtype=torch.float32)
            shift = torch.zeros_like(ones) if bias is None else bias.float()
            y, sums = depthwise_conv_bn_silu(x, weight, ones, shift, stride=stride, padding=tuple(padding),
                                             activation=activation == "silu", return_sums=return_means)
            return (y, sums.sum(dim=1) / (y.shape[1] * y.shape[2])) if return_means else y  # the parts added

        def squeeze_excite_gate(self, pooled, w_reduce, b_reduce, w_expand, b_expand, *, activation="silu"):
            return se_gate(pooled.float().contiguous(), 1, w_reduce, b_reduce, w_expand, b_expand)

        def global_pool(self, x, kind):
            x = x.float()
            return x.mean(dim=(1, 2)) if kind == "mean" else x.amax(dim=(1, 2))

    return PerForwardOps


def build(dtype: str, ops_class=None):
    """align-base (AlignConfig's defaults) on meta tensors, its weights never materialised."""
    from minialign.align_model import AlignModel
    from minialign.config import AlignConfig
    from minialign.kernels import plan

    config = AlignConfig()
    params = {name: plan._zeros(shape) for name, shape in AlignModel.expected_shapes(config).items()}
    params = {n: (np.ones(p.shape, np.float32) if n.endswith("running_var") else p) for n, p in params.items()}
    ops = plan._planning_ops(dtype)
    if ops_class is not None:
        ops.__class__ = ops_class
    return AlignModel(config, params, ops=ops)


def graph_bookkeeping(model, pixels):
    """A GraphedForward around the vision tower whose captured graph replays nothing."""
    from minialign.cuda_graphs import GraphedForward

    class NoReplay:
        def replay(self):
            return None

    def capture(fn, inputs):
        return NoReplay(), fn(*inputs)

    forward = GraphedForward(model.vision_model.encode, capture=capture)
    forward(pixels), forward(pixels)  # eager, then captured
    return lambda: forward(pixels)


def cpu_times(fns: dict, repeats: int) -> dict:
    """CPU seconds of this thread per call of each function, calling them in alternation (one
    untimed call each first). Thread CPU time, not wall time: on a shared machine a busy
    neighbour stretches the wall clock of every call, not the CPU work the call itself does.
    Per name: median/min/max seconds; under "ratios", each repeat's ``first / name``."""
    samples = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.thread_time()
            fn()
            samples[name].append(time.thread_time() - start)
    result = {name: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s)} for name, s in samples.items()}
    first, *others = fns
    result["ratios"] = {f"{first}_over_{name}": statistics.median(a / b for a, b in zip(samples[first], samples[name]))
                        for name in others}
    return result


ROWS = {  # candidate -> its row on docs/backends.md
    "vision_per_forward_constants": "vision, constants made in every forward (before)",
    "vision": "vision, weights prepared once",
    "graph_replay_bookkeeping": "vision, a CUDA graph's replay: the bookkeeping around it",
    "text": "text",
}


def table(result: dict) -> str:
    """The docs' table (docs/backends.md) of a result file."""
    s = result["shapes"]
    lines = [f"| forward (align-base, {result['dtype']}; {s['image_batch']} images of {s['image_size']}x"
             f"{s['image_size']}, {s['text_batch']} texts of {s['text_length']} tokens) | Triton launches "
             "| torch ops | host CPU ms |", "|---|---:|---:|---:|"]
    for name, row in ROWS.items():
        n = result["launches_per_forward"][name]
        lines.append(f"| {row} | {n['triton']} | {n['torch']} | {result['host_ms_per_forward'][name]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls of each candidate (alternating)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--dry-run", action="store_true", help="small shapes, 3 repeats: checks the script")
    parser.add_argument("--table", metavar="JSON", default=None, help="measure nothing: print the docs' table of a result")
    args = parser.parse_args()
    if args.table:
        with open(args.table, encoding="utf-8") as fh:
            print(table(json.load(fh)))
        return
    import torch

    from minialign.kernels import plan

    shapes = TINY if args.dry_run else dict(image_batch=IMAGE_BATCH, image_size=IMAGE_SIZE,
                                            text_batch=TEXT_BATCH, text_length=TEXT_LENGTH)
    repeats = 3 if args.dry_run else args.repeats
    dtype = getattr(torch, args.dtype)
    with stubbed_kernels():
        after = build(args.dtype)
        before = build(args.dtype, per_forward_ops(type(plan._planning_ops(args.dtype))))
        pixels = torch.empty(shapes["image_batch"], 3, shapes["image_size"], shapes["image_size"],
                             dtype=dtype, device="meta")
        ids = torch.empty(shapes["text_batch"], shapes["text_length"], dtype=torch.int64, device="meta")
        mask = torch.empty_like(ids)
        candidates = {
            "vision_per_forward_constants": lambda: before.vision_model.encode(pixels),
            "vision": lambda: after.vision_model.encode(pixels),
            "text": lambda: after.text_model.encode(ids, mask, mask),
            "graph_replay_bookkeeping": graph_bookkeeping(after, pixels),
        }
        launches = {}
        for name, fn in candidates.items():
            fn()  # the first launch of each specialisation stores its stub
            with counting() as counted:
                fn()
            launches[name] = {"triton": sum(counted.triton.values()), "torch": sum(counted.torch.values()),
                              "torch_ops": dict(sorted(counted.torch.items()))}
        times = cpu_times(candidates, repeats)
    ms = {name: 1e3 * times[name]["median_s"] for name in candidates}
    result = {
        "benchmark": "host time per forward on the Triton backend, kernels stubbed below the JIT, meta tensors",
        "machine": machine(), "dry_run": args.dry_run, "dtype": args.dtype, "shapes": shapes, "repeats": repeats,
        "host_ms_per_forward": ms,
        "times": times,
        "launches_per_forward": launches,
        "vision_before_over_after": times["ratios"]["vision_per_forward_constants_over_vision"],
        "not_included": "the driver's launch call per Triton launch (StubKernel.run does nothing), torch's CUDA "
                        "kernel launches (meta tensors launch nothing), and cudaGraphLaunch in the replay",
        "meta_tensor_differences": "on meta tensors torch's convolution returns NCHW memory where cuDNN (and the CPU) "
                                   "return channels-last for a channels-last input, so the stem's output costs one "
                                   "clone here that it does not on a GPU (59 torch ops, not 60); and the final mean "
                                   "runs torch's Python reference on meta (~0.3 ms), a C++ call on a GPU",
        "timer": "time.thread_time: this thread's CPU time, not wall time (a shared machine stretches wall time)",
        "target_ms_vision_graph_replay": 1.0,
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
