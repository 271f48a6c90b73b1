"""Step 0 of the GPU run: compile every kernel specialisation the later steps launch, in parallel,
into Triton's on-disk cache, so that no later step spends its minutes compiling one at a time.

Triton compiles a kernel the first time it is launched with a new specialisation (argument
dtypes, 16-byte alignment and divisibility, constexprs, warps and stages), one after another, in
the launching process. The kernel lab (kernels/plan.py) finds those specialisations without
running anything; this script compiles them with ``triton.compile`` for this machine's GPU, one
process per core. ``triton.compile`` stores each result under the same key as the JIT's own
first launch computes (source, signature, constexprs, attributes, options, target), so that
launch then loads it from the cache. ``first_forward_s`` in the result checks that it did: one
bfloat16 vision forward at the speed step's shape, timed right after (seconds when every kernel
was found, minutes when they were compiled after all).

Workloads: align-base in bfloat16 at the speed step's shapes (64 and 8 images of 289x289, 256
texts of 64 tokens) and in both dtypes at the correctness step's (4 images, 8 texts of 64).

    python benchmarks/warm_triton_cache.py --out "$OUT/warm_triton_cache.json"
    python benchmarks/warm_triton_cache.py --dry-run     # no GPU: sm_90a, tiny config, 2 compiles
"""

from __future__ import annotations

import os

os.environ.pop("TRITON_INTERPRET", None)  # this compiles for a GPU; the interpreter compiles nothing

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from common import gpu_device_name, machine, write_json  # noqa: E402

# (dtype, images, image size, texts, text length): what steps 1-3 launch (see run_gpu.sh).
WORKLOADS = [("bfloat16", 64, 289, 256, 64), ("bfloat16", 8, 289, 256, 64),
             ("bfloat16", 4, 289, 8, 64), ("float32", 4, 289, 8, 64)]
TINY_WORKLOADS = [("float32", 2, 33, 4, 8)]


def _compile(job: tuple) -> float:
    """Compile one specialisation (in a worker process); seconds it took."""
    import triton
    from triton.backends.compiler import GPUTarget

    from minialign.kernels import plan

    kernel, signature, constexprs, attrs, options, capability = job
    fn = {f.__name__: f for f in plan._kernels()}[kernel]
    start = time.perf_counter()
    triton.compile(triton.compiler.ASTSource(fn, signature, constexprs, attrs),
                   target=GPUTarget("cuda", capability, 32), options=options)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="compiling processes")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: a tiny config for sm_90a, 2 compiles")
    args = parser.parse_args()
    import multiprocessing

    import torch

    from minialign.config import AlignConfig
    from minialign.kernels import plan

    on_gpu = torch.cuda.is_available() and not args.dry_run
    if not on_gpu and not args.dry_run:
        sys.exit("warm_triton_cache: no CUDA device; use --dry-run to check the script on the CPU")
    capability = (lambda major, minor: 10 * major + minor)(*torch.cuda.get_device_capability()) if on_gpu else 90
    arch = {90: "sm_90a", 80: "sm_80"}.get(capability, "sm_90a")  # planning needs one the lab knows
    config = AlignConfig() if on_gpu else AlignConfig(
        text_config=dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=48),
        vision_config=dict(width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=64), projection_dim=80)

    start = time.perf_counter()
    jobs: dict[tuple, tuple] = {}
    for dtype, images, size, texts, length in WORKLOADS if on_gpu else TINY_WORKLOADS:
        for launch in plan.model_launches(config, arch=arch, dtype=dtype, image_batch=images, image_size=size,
                                          text_batch=texts, text_length=length):
            jobs.setdefault(launch.key, (launch.kernel, launch.signature, launch.constexprs, launch.attrs,
                                         launch.options, capability))
    planned_s = time.perf_counter() - start
    todo = list(jobs.values())[:2] if args.dry_run else list(jobs.values())
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        seconds = list(pool.map(_compile, todo))
    result = {"benchmark": "Triton cache warm-up: every specialisation of the GPU run, compiled in parallel",
              "device": gpu_device_name(), "machine": machine(), "dry_run": args.dry_run,
              "capability": capability, "specialisations": len(jobs), "compiled": len(todo),
              "plan_s": planned_s, "wall_s": time.perf_counter() - start, "compile_s_summed": sum(seconds),
              "workers": args.workers}
    if on_gpu:  # did the JIT find them? one forward, timed from a cold process's point of view
        import tempfile

        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
        from reference import align_checkpoint

        from minialign import AlignModel

        directory = tempfile.mkdtemp(prefix="align-")
        align_checkpoint(directory, seed=0)
        model = AlignModel.from_pretrained(directory, backend="triton", dtype="bfloat16")
        pixels = torch.zeros(64, 3, 289, 289, dtype=torch.bfloat16, device="cuda")
        start = time.perf_counter()
        model.vision_model(pixels)
        torch.cuda.synchronize()
        result["first_forward_s"] = time.perf_counter() - start
    write_json(args.out, result)


if __name__ == "__main__":
    main()
