"""The whole ALIGN model on a GPU: minialign's Triton backend vs transformers, in the same run.

align-base architecture with the tests' random non-trivial weights (speed does not depend on
their values), one process, one GPU. What it measures (the Triton-backend issue's list):

- vision tower, images/s: batch 64 at 289x289 in bfloat16; transformers eager (channels_last)
  and with torch.compile, minialign ``backend="triton"``;
- text tower, texts/s: batch 256 padded to 64 tokens; and realistic captions (the synthetic
  alt-text, 8-20 tokens) padded to 64 as AlignProcessor does by default, which minialign's
  ``get_text_features`` runs packed (the Triton backend's default: the real tokens only) or in
  length buckets (``packed=False``);
- peak GPU memory of each run (``torch.cuda.max_memory_allocated``);
- minialign's time per op (CUDA-synchronised timers around every backend call: slower than a
  free run, but it says where the time goes);
- correctness: float32 normalised embeddings vs transformers (max abs error, target <= 1e-4),
  bfloat16 vs float32 embeddings (cosine similarity, target >= 0.999).

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    parser.add_argument("--dry-run", action="store_true", help="tiny config on the CPU interpreter, time nothing")
    args = parser.parse_args()
    on_gpu = should_time_on_gpu("gpu_align", args.dry_run)
    if not on_gpu and not args.dry_run:
        return

    import torch
    from transformers import AlignModel as HFModel

    from minialign import AlignModel, AlignProcessor, synthetic
    from minialign.loss import l2_normalize

    directory = tempfile.mkdtemp(prefix="align-")
    align_checkpoint(directory, seed=0, **({} if on_gpu else TINY))
    device = "cuda" if on_gpu else "cpu"
    n_images, n_texts, size = (64, 256, 289) if on_gpu else (2, 4, 33)
    processor = AlignProcessor.from_pretrained(directory)
    rng = np.random.default_rng(0)
    pixels_np = rng.uniform(-1, 1, (n_images, 3, size, size)).astype(np.float32)
    padded_64 = processor(text=["a photo of a dog on the beach, taken at sunset"] * n_texts)  # pads to 64
    captions = [e.caption for e in synthetic.generate(n_texts, split="train", seed=0, image_size=16)]
    captions_64 = processor(text=captions)
    result = {"benchmark": "ALIGN on a GPU: minialign triton backend vs transformers", "device": gpu_device_name(),
              "machine": machine(), "dry_run": args.dry_run, "batch": {"images": n_images, "image_size": size,
                                                                       "texts": n_texts},
              "openblas_thread_timeout": openblas_thread_timeout(OPENBLAS_GIVEN)}
    result["caption_tokens"] = {"mean": float(np.mean(captions_64["attention_mask"].sum(1))),
                                "max": int(captions_64["attention_mask"].sum(1).max())}

    def bench(fn):
        return gpu_time_ms(fn) if on_gpu else (fn(), None)[1]  # the dry run runs it once, times nothing

    # -- correctness, float32 ------------------------------------------------------------------
    hf32 = HFModel.from_pretrained(directory).to(device).eval()
    ours32 = AlignModel.from_pretrained(directory, backend="triton", dtype="float32")
    with torch.inference_mode():
        ids, mask = torch.from_numpy(padded_64["input_ids"][:8]).to(device), torch.from_numpy(
            padded_64["attention_mask"][:8]).to(device)
        hf_text = l2_normalize(features(hf32.get_text_features(input_ids=ids, attention_mask=mask)).float().cpu().numpy())
        hf_image = l2_normalize(features(hf32.get_image_features(
            pixel_values=torch.from_numpy(pixels_np[:4]).to(device))).float().cpu().numpy())
    our_text32 = l2_normalize(ours32.get_text_features(padded_64["input_ids"][:8], padded_64["attention_mask"][:8]))
    our_image32 = l2_normalize(ours32.get_image_features(pixels_np[:4]))
    result["float32_vs_transformers_max_abs"] = {"text_embeds": float(np.abs(our_text32 - hf_text).max()),
                                                 "image_embeds": float(np.abs(our_image32 - hf_image).max()),
                                                 "target": 1e-4}
    del hf32
    if on_gpu:
        torch.cuda.empty_cache()

    # -- speed and memory, bfloat16 (float32 under the interpreter) ----------------------------
    dtype = "bfloat16" if on_gpu else "float32"
    torch_dtype = getattr(torch, dtype)
    ours = AlignModel.from_pretrained(directory, backend="triton", dtype=dtype)
    our_text = l2_normalize(ours.get_text_features(padded_64["input_ids"][:8], padded_64["attention_mask"][:8]))
    our_image = l2_normalize(ours.get_image_features(pixels_np[:4]))
    result[f"{dtype}_vs_float32_min_cosine"] = {
        "text_embeds": float((our_text * our_text32).sum(1).min()),
        "image_embeds": float((our_image * our_image32).sum(1).min()), "target": 0.999}

    pixels = torch.from_numpy(pixels_np).to(device, torch_dtype)
    pixels_cl = pixels.contiguous(memory_format=torch.channels_last)
    tokens = {k: torch.from_numpy(v).to(device) for k, v in padded_64.items()}
    caption_tokens = {k: torch.from_numpy(v).to(device) for k, v in captions_64.items()}
    hf = HFModel.from_pretrained(directory, dtype=torch_dtype).to(device).eval()
    hf_cl = HFModel.from_pretrained(directory, dtype=torch_dtype).to(device).eval().to(memory_format=torch.channels_last)

    def hf_vision(model=hf_cl):
        with torch.inference_mode():
            return model.get_image_features(pixel_values=pixels_cl)

    def hf_text_fn(batch, model=hf):
        def run():
            with torch.inference_mode():
                return model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return run

    runs = {
        "vision": {"transformers_eager_channels_last": hf_vision,
                   "minialign_triton": lambda: ours.vision_model(pixels).pooler_output},
        "text_padded_64": {"transformers_eager": hf_text_fn(tokens),
                           "minialign_triton_packed": lambda: ours.get_text_features(padded_64["input_ids"],
                                                                                     padded_64["attention_mask"])},
        "text_captions": {"transformers_eager": hf_text_fn(caption_tokens),
                          "minialign_triton_packed": lambda: ours.get_text_features(
                              captions_64["input_ids"], captions_64["attention_mask"], packed=True),
                          "minialign_triton_buckets": lambda: ours.get_text_features(
                              captions_64["input_ids"], captions_64["attention_mask"], packed=False)},
    }
    if on_gpu and not args.no_compile:
        compiled = torch.compile(hf_cl)
        runs["vision"]["transformers_compiled"] = lambda: hf_vision(compiled)
        compiled_text = torch.compile(hf)
        runs["text_padded_64"]["transformers_compiled"] = hf_text_fn(tokens, compiled_text)
        runs["text_captions"]["transformers_compiled"] = hf_text_fn(caption_tokens, compiled_text)
    counts = {"vision": n_images, "text_padded_64": n_texts, "text_captions": n_texts}
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
