"""Step 2 of the GPU run: the whole ALIGN model's speed, minialign's Triton backend vs
transformers, in the same run (correctness is step 1, ``benchmarks/gpu_correctness.py``).

align-base architecture with the tests' random non-trivial weights (speed does not depend on
their values), one process, one GPU, bfloat16. What it measures:

- vision tower, images/s: batch 64 at 289x289 (and batch 8, where launches dominate):
  transformers eager (channels_last) and with torch.compile; minialign ``backend="triton"``
  eager and with ``cuda_graphs=True`` (captured once per shape, then replayed);
- text tower, texts/s: batch 256 padded to 64 tokens; and realistic captions (the synthetic
  alt-text, 8-20 tokens) padded to 64 as AlignProcessor does by default, which minialign's
  ``get_text_features`` runs packed (the Triton backend's default: the real tokens only) or in
  length buckets (``packed=False``);
- host time per vision forward: how long the call takes to return with the GPU idle before it
  (the launches queue asynchronously, so this is what the CPU spends issuing a forward), eager
  vs graphed; the target with graphs is <= 1 ms;
- peak GPU memory of each run (``torch.cuda.max_memory_allocated``);
- minialign's time per op (CUDA-synchronised timers around every backend call: slower than a
  free run, but it says where the time goes).

Timings use Triton's ``do_bench`` (median, 20th/80th percentiles). Without CUDA nothing is
timed; ``--dry-run`` then runs a tiny config on Triton's CPU interpreter to check the script.

    python benchmarks/gpu_align.py --out "$OUT/gpu_align.json"
    python benchmarks/gpu_align.py --no-compile        # skip torch.compile (saves ~2 minutes)
    python benchmarks/gpu_align.py --dry-run
"""

from __future__ import annotations

import os

# Before NumPy loads OpenBLAS, which reads it once (see benchmarks/common.py): the checkpoint,
# the inputs and the checks run NumPy on the CPU.
OPENBLAS_GIVEN = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from common import (  # noqa: E402
    TimedOps, gpu_device_name, gpu_time_ms, machine, openblas_thread_timeout, should_time_on_gpu, write_json,
)
from reference import align_checkpoint  # noqa: E402

TINY = dict(text=dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=48),
            vision=dict(width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=64), projection_dim=80)


def features(output):
    """transformers 5 returns the features in an output object's pooler_output (4.x: the tensor)."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


def per_op_breakdown(tower, call, repeats: int = 5) -> dict[str, float]:
    """Milliseconds per call of ``call()`` spent in each op of ``tower`` (a text or vision model)."""
    import torch

    ops, timed = tower.ops, TimedOps(tower.ops, sync=torch.cuda.synchronize)
    tower.ops = timed
    try:
        call()  # warm-up (compilation of the kernels' specialisations)
        timed.totals.clear()
        for _ in range(repeats):
            call()
    finally:
        tower.ops = ops
    return {op: 1000 * s / repeats for op, s in sorted(timed.totals.items(), key=lambda kv: -kv[1])}


def peak_memory_mib(fn) -> float:
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def host_ms(fn, repeats: int = 20) -> dict:
    """Milliseconds the host spends in ``fn()`` when the GPU is idle before it (synchronised before
    each call, not after): the time to issue a forward's launches, not to run them."""
    import statistics
    import time

    import torch

    samples = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        samples.append(1e3 * (time.perf_counter() - start))
    torch.cuda.synchronize()
    return {"median_ms": statistics.median(samples), "min_ms": min(samples), "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    parser.add_argument("--dry-run", action="store_true", help="tiny config on the CPU interpreter, time nothing")
    args = parser.parse_args()
    on_gpu = should_time_on_gpu("gpu_align", args.dry_run)
    if not on_gpu and not args.dry_run:
        sys.exit(2)

    import torch
    from transformers import AlignModel as HFModel

    from minialign import AlignModel, AlignProcessor, synthetic

    directory = tempfile.mkdtemp(prefix="align-")
    align_checkpoint(directory, seed=0, **({} if on_gpu else TINY))
    device = "cuda" if on_gpu else "cpu"
    n_images, n_small, n_texts, size = (64, 8, 256, 289) if on_gpu else (2, 1, 4, 33)
    processor = AlignProcessor.from_pretrained(directory)
    rng = np.random.default_rng(0)
    pixels_np = rng.uniform(-1, 1, (n_images, 3, size, size)).astype(np.float32)
    padded_64 = processor(text=["a photo of a dog on the beach, taken at sunset"] * n_texts)  # pads to 64
    captions = [e.caption for e in synthetic.generate(n_texts, split="train", seed=0, image_size=16)]
    captions_64 = processor(text=captions)
    result = {"benchmark": "ALIGN on a GPU: minialign triton backend vs transformers, speed", "device": gpu_device_name(),
              "machine": machine(), "dry_run": args.dry_run, "batch": {"images": n_images, "small_images": n_small,
                                                                       "image_size": size, "texts": n_texts},
              "openblas_thread_timeout": openblas_thread_timeout(OPENBLAS_GIVEN)}
    result["caption_tokens"] = {"mean": float(np.mean(captions_64["attention_mask"].sum(1))),
                                "max": int(captions_64["attention_mask"].sum(1).max())}

    def bench(fn):
        return gpu_time_ms(fn) if on_gpu else (fn(), None)[1]  # the dry run runs it once, times nothing

    # bfloat16 on the GPU (float32 under the interpreter)
    dtype = "bfloat16" if on_gpu else "float32"
    torch_dtype = getattr(torch, dtype)
    ours = AlignModel.from_pretrained(directory, backend="triton", dtype=dtype)
    graphed = AlignModel.from_pretrained(directory, backend="triton", dtype=dtype, cuda_graphs=True) if on_gpu else None

    pixels = torch.from_numpy(pixels_np).to(device, torch_dtype)
    pixels_cl = pixels.contiguous(memory_format=torch.channels_last)
    tokens = {k: torch.from_numpy(v).to(device) for k, v in padded_64.items()}
    caption_tokens = {k: torch.from_numpy(v).to(device) for k, v in captions_64.items()}
    hf = HFModel.from_pretrained(directory, dtype=torch_dtype).to(device).eval()
    hf_cl = HFModel.from_pretrained(directory, dtype=torch_dtype).to(device).eval().to(memory_format=torch.channels_last)

    def hf_vision(model=hf_cl, images=pixels_cl):
        with torch.inference_mode():
            return model.get_image_features(pixel_values=images)

    def hf_text_fn(batch, model=hf):
        def run():
            with torch.inference_mode():
                return model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return run

    def vision(model, images):
        return lambda: model.vision_model(images).pooler_output

    small, small_cl = pixels[:n_small].contiguous(), pixels_cl[:n_small].contiguous(memory_format=torch.channels_last)
    runs = {
        "vision": {"transformers_eager_channels_last": hf_vision, "minialign_triton": vision(ours, pixels)},
        "vision_small_batch": {"transformers_eager_channels_last": lambda: hf_vision(images=small_cl),
                               "minialign_triton": vision(ours, small)},
        "text_padded_64": {"transformers_eager": hf_text_fn(tokens),
                           "minialign_triton_packed": lambda: ours.get_text_features(padded_64["input_ids"],
                                                                                     padded_64["attention_mask"])},
        "text_captions": {"transformers_eager": hf_text_fn(caption_tokens),
                          "minialign_triton_packed": lambda: ours.get_text_features(
                              captions_64["input_ids"], captions_64["attention_mask"], packed=True),
                          "minialign_triton_buckets": lambda: ours.get_text_features(
                              captions_64["input_ids"], captions_64["attention_mask"], packed=False)},
    }
    if graphed is not None:
        runs["vision"]["minialign_triton_cuda_graphs"] = vision(graphed, pixels)
        runs["vision_small_batch"]["minialign_triton_cuda_graphs"] = vision(graphed, small)
        runs["text_padded_64"]["minialign_triton_cuda_graphs"] = lambda: graphed.get_text_features(
            padded_64["input_ids"], padded_64["attention_mask"])
        runs["text_captions"]["minialign_triton_buckets_cuda_graphs"] = lambda: graphed.get_text_features(
            captions_64["input_ids"], captions_64["attention_mask"])
    if on_gpu and not args.no_compile:
        compiled = torch.compile(hf_cl)
        runs["vision"]["transformers_compiled"] = lambda: hf_vision(compiled)
        compiled_text = torch.compile(hf)
        runs["text_padded_64"]["transformers_compiled"] = hf_text_fn(tokens, compiled_text)
        runs["text_captions"]["transformers_compiled"] = hf_text_fn(caption_tokens, compiled_text)
    counts = {"vision": n_images, "vision_small_batch": n_small, "text_padded_64": n_texts, "text_captions": n_texts}
    for task, candidates in runs.items():
        result[task] = {}
        for name, fn in candidates.items():
            timing = bench(fn)
            entry = {"timing": timing}
            if on_gpu:
                entry["items_per_s"] = counts[task] / (timing["median_ms"] / 1000)
                entry["peak_memory_mib"] = peak_memory_mib(fn)
            result[task][name] = entry
    result["targets_items_per_s"] = {"vision": 5000, "text_padded_64": 45000, "text_captions": 150000}
    if on_gpu:
        result["host_ms_per_vision_forward"] = {
            "minialign_triton": host_ms(vision(ours, pixels)),
            "minialign_triton_cuda_graphs": host_ms(vision(graphed, pixels)),  # captured during the timing above
            "target_cuda_graphs_ms": 1.0}
        result["minialign_per_op_ms"] = {
            "vision": per_op_breakdown(ours.vision_model, lambda: ours.vision_model(pixels)),
            "text_padded_64": per_op_breakdown(ours.text_model, lambda: ours.text_model(
                padded_64["input_ids"], padded_64["attention_mask"])),
            "text_captions_packed": per_op_breakdown(ours.text_model, lambda: ours.text_model(
                captions_64["input_ids"], captions_64["attention_mask"], packed=True)),
        }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
