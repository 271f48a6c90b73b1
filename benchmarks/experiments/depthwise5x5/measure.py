"""Instructions per output of 5x5 stride-1 bfloat16 depthwise variants, compiled for sm_90a (no GPU).

An experiment's harness, not part of the kernel lab: it records one launch per align-base 5x5
stride-1 map (batch 64, bfloat16) through ``plan.recording`` on meta tensors, compiles it with
``aot.compile_for`` and counts issued warp-instructions per output as ``report.issued_per_warp``
does (static SASS, each loop body once per trip). Run without TRITON_INTERPRET:

    PYTHONPATH=. python benchmarks/experiments/depthwise5x5/measure.py today
    PYTHONPATH=. python benchmarks/experiments/depthwise5x5/measure.py scalar-fast   # applies the .diff
    PYTHONPATH=. python benchmarks/experiments/depthwise5x5/measure.py mma "SPLIT=2"
    PYTHONPATH=. python benchmarks/experiments/depthwise5x5/measure.py mma "SPLIT=1,FAST_SILU=True"
"""
import functools
import importlib.util
import os
import subprocess
import sys
import tempfile

import torch

from minialign.kernels import aot, plan, report

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = [(36, 36, 480), (18, 18, 960), (18, 18, 1344), (9, 9, 2304)]  # (H, W, C), 'same' padding


def record(launcher, kernels, H, W, C, B=64):
    launches, original = [], plan._kernels
    plan._kernels = lambda: kernels  # record our kernel too
    try:
        with plan.recording("sm_90a", launches, ["vision"]):
            x = torch.empty((B, H, W, C), dtype=torch.bfloat16, device="meta")
            w = torch.empty((C, 1, 5, 5), dtype=torch.bfloat16, device="meta")
            s = torch.empty((C,), dtype=torch.float32, device="meta")
            launcher(x, w, s, s, stride=1, padding=(2, 2, 2, 2))
    finally:
        plan._kernels = original
    [launch] = launches
    return launch


def analyse(launch, trips):
    c = aot.compile_for(launch.fn, launch.signature, launch.constexprs, launch.attrs, launch.options, "sm_90a")
    issued = c.mix.total - c.mix.by_class.get("padding", 0)
    outer = [loop for loop in c.mix.loops if loop.depth == 0]
    assert len(outer) <= 1, "one loop at most (the tile loop)"
    issued += sum((trips - 1) * loop.total for loop in outer)
    B, Ho, Wo, C = launch.tensors["y_ptr"][0]
    per_output = issued * c.num_warps * launch.programs / (B * Ho * Wo * C)
    dev, occ = report.DEVICES["h100"], c.occupancy()
    per_sm = -(-launch.programs // dev.sms)
    resident = min(per_sm, max(occ.blocks_per_sm, 1))
    issue_s = -(-per_sm // resident) * max(resident * c.num_warps * issued / 4, issued) / dev.clock_hz
    nbytes = 2 * B * Ho * Wo * C * 2  # x read once, y written once (bfloat16); taps, sums: < 1%
    memory_s = nbytes / dev.hbm_bytes_per_s
    return (f"{per_output:.3f} w-ins/out, regs {c.registers_per_thread}, spill {c.spill_store_bytes} B, "
            f"smem {c.shared_bytes_per_block} B, blocks/SM {occ.blocks_per_sm}, issue {issue_s * 1e6:.1f} us, "
            f"memory {memory_s * 1e6:.1f} us, predicted {nbytes / max(issue_s, memory_s) / 1e12:.2f} TB/s")


def main():
    which = sys.argv[1]
    options = eval(f"dict({sys.argv[2] if len(sys.argv) > 2 else ''})")
    if which == "mma":
        sys.path.insert(0, HERE)
        import mma_prototype as module
        launcher, kernel = functools.partial(module.launch, **options), module._dw5_mma_kernel
    else:
        from minialign.kernels import depthwise_conv as module
        if which == "scalar-fast":  # today's kernel with the .diff applied, imported from a copy
            tmp = tempfile.mkdtemp()
            path = os.path.join(tmp, "depthwise_conv.py")
            with open(module.__file__) as fh, open(path, "w") as out:
                out.write(fh.read())
            subprocess.run(["patch", "-s", path, os.path.join(HERE, "scalar_fast_epilogue.diff")], check=True)
            spec = importlib.util.spec_from_file_location("dc_fast", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        launcher, kernel = module.depthwise_conv_bn_silu, module._depthwise_conv_bn_silu_kernel
    for H, W, C in SHAPES:
        launch = record(launcher, [kernel], H, W, C)
        k = launch.constants
        trips = -(-(H * -(-W // k["RUN"])) // k["SLOTS"]) if which == "mma" else 1
        print(f"{which} {options} {H}x{W}x{C}: {analyse(launch, trips)}", flush=True)


if __name__ == "__main__":
    main()
