"""Step 1 of the GPU run: the whole model on the Triton backend against transformers, on one GPU.

align-base's architecture with the tests' random, non-trivial weights (random batchnorm
statistics and affine parameters: batchnorm hides bugs at its defaults), in one process:

- float32 vs transformers in float32 with TF32 off in torch (``torch.backends.cuda.matmul.
  allow_tf32 = False``, ``torch.backends.cudnn.allow_tf32 = False``): with TF32 on, torch's own
  matrix products and convolutions round their inputs to 10 bits of mantissa and the reference is
  no longer float32. Normalised image and text embeddings, max abs error, target <= 1e-4;
- bfloat16 vs our float32: the smallest cosine similarity between the two embeddings of an
  item, target >= 0.999;
- CUDA graphs (``cuda_graphs=True``, minialign/cuda_graphs.py) vs eager, in both dtypes: the
  embeddings of three calls with different inputs (graphs are captured on the second and
  replayed on the third), max abs difference, target <= 1e-5 (the same kernels on the same
  inputs; the depthwise kernel's atomic sums may add in another order), and the zero-shot
  pipeline's scores.

Without CUDA nothing is checked; ``--dry-run`` runs the same checks on a tiny config on Triton's
CPU interpreter (graphs skipped: there is nothing to capture), to check the script.

    python benchmarks/gpu_correctness.py --out "$OUT/gpu_correctness.json"
    python benchmarks/gpu_correctness.py --dry-run
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")  # before NumPy (see benchmarks/common.py)

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from common import gpu_device_name, machine, should_time_on_gpu, write_json  # noqa: E402
from reference import align_checkpoint  # noqa: E402

TINY = dict(text=dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=48),
            vision=dict(width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=64), projection_dim=80)
TARGETS = {"float32_vs_transformers_max_abs": 1e-4, "bfloat16_vs_float32_min_cosine": 0.999,
           "graph_vs_eager_max_abs": 1e-5}


def features(output):
    """transformers 5 returns the features in an output object's pooler_output (4.x: the tensor)."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    parser.add_argument("--dry-run", action="store_true", help="tiny config on the CPU interpreter")
    args = parser.parse_args()
    on_gpu = should_time_on_gpu("gpu_correctness", args.dry_run)
    if not on_gpu and not args.dry_run:
        sys.exit(2)

    import torch
    from transformers import AlignModel as HFModel

    from minialign import AlignModel, AlignProcessor, pipeline, synthetic
    from minialign.loss import l2_normalize

    # The reference in true float32 (and our stem's cuDNN convolution too).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    directory = tempfile.mkdtemp(prefix="align-")
    align_checkpoint(directory, seed=0, **({} if on_gpu else TINY))
    device = "cuda" if on_gpu else "cpu"
    n_images, size = (4, 289) if on_gpu else (2, 33)
    processor = AlignProcessor.from_pretrained(directory)
    rng = np.random.default_rng(0)
    pixels = [rng.uniform(-1, 1, (n_images, 3, size, size)).astype(np.float32) for _ in range(3)]
    captions = [e.caption for e in synthetic.generate(8, split="train", seed=0, image_size=16)]
    padded = processor(text=captions)  # padded to 64, as AlignProcessor does by default
    result = {"benchmark": "ALIGN on a GPU: minialign triton backend vs transformers, correctness",
              "device": gpu_device_name(), "machine": machine(), "dry_run": args.dry_run, "tf32": False,
              "images": {"batch": n_images, "size": size}, "texts": len(captions), "targets": TARGETS}

    hf = HFModel.from_pretrained(directory).to(device).eval()
    with torch.inference_mode():
        hf_image = l2_normalize(features(hf.get_image_features(
            pixel_values=torch.from_numpy(pixels[0]).to(device))).float().cpu().numpy())
        hf_text = l2_normalize(features(hf.get_text_features(
            input_ids=torch.from_numpy(padded["input_ids"]).to(device),
            attention_mask=torch.from_numpy(padded["attention_mask"]).to(device))).float().cpu().numpy())
    del hf

    def embeds(model, images):
        return (l2_normalize(model.get_image_features(images)),
                l2_normalize(model.get_text_features(padded["input_ids"], padded["attention_mask"])))

    dtypes = ("float32", "bfloat16") if on_gpu else ("float32",)
    eager = {dtype: AlignModel.from_pretrained(directory, backend="triton", dtype=dtype) for dtype in dtypes}
    image32, text32 = embeds(eager["float32"], pixels[0])
    result["float32_vs_transformers_max_abs"] = {"image_embeds": float(np.abs(image32 - hf_image).max()),
                                                 "text_embeds": float(np.abs(text32 - hf_text).max())}
    if "bfloat16" in eager:
        image16, text16 = embeds(eager["bfloat16"], pixels[0])
        result["bfloat16_vs_float32_min_cosine"] = {"image_embeds": float((image16 * image32).sum(1).min()),
                                                    "text_embeds": float((text16 * text32).sum(1).min())}

    if on_gpu:  # CUDA graphs: captured on the second call of a shape, replayed on the third
        labels = ["a red circle", "a blue square", "a green triangle"]
        images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
        result["graph_vs_eager_max_abs"] = {}
        for dtype in dtypes:
            graphed = AlignModel.from_pretrained(directory, backend="triton", dtype=dtype, cuda_graphs=True)
            worst = {"image_embeds": 0.0, "text_embeds": 0.0, "pipeline_scores": 0.0}
            classify = {name: pipeline("zero-shot-image-classification", model=m, processor=processor)
                        for name, m in (("eager", eager[dtype]), ("graphed", graphed))}
            for call in range(3):
                for name, got, want in zip(("image_embeds", "text_embeds"), embeds(graphed, pixels[call]),
                                           embeds(eager[dtype], pixels[call])):
                    worst[name] = max(worst[name], float(np.abs(got - want).max()))
                got = {r["label"]: r["score"] for r in classify["graphed"](images[call], labels)}
                want = {r["label"]: r["score"] for r in classify["eager"](images[call], labels)}
                worst["pipeline_scores"] = max(worst["pipeline_scores"], max(abs(got[k] - want[k]) for k in labels))
            worst["vision_graphs"] = len(graphed.vision_model.graphs.captured)
            worst["text_graphs"] = len(graphed.text_model.graphs.captured)
            result["graph_vs_eager_max_abs"][dtype] = worst
            del graphed

    checks = [max(result["float32_vs_transformers_max_abs"].values()) <= TARGETS["float32_vs_transformers_max_abs"]]
    if "bfloat16_vs_float32_min_cosine" in result:
        checks.append(min(result["bfloat16_vs_float32_min_cosine"].values())
                      >= TARGETS["bfloat16_vs_float32_min_cosine"])
    for worst in result.get("graph_vs_eager_max_abs", {}).values():
        checks.append(max(worst["image_embeds"], worst["text_embeds"]) <= TARGETS["graph_vs_eager_max_abs"])
    result["all_within_targets"] = all(checks)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
