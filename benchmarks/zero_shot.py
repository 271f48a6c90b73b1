"""Zero-shot classification end to end: minialign (NumPy) vs transformers (torch CPU), same run.

One 289x289 image against 10 labels on the align-base architecture (random non-trivial
weights; speed does not depend on their values): preprocessing, tokenizing and both towers.
Target: minialign's fast ``numpy`` backend (the default) <= 1.5x transformers' time. The
``reference`` backend (the plain math) is timed beside them, end to end and on the texts, with
fewer repeats (``--reference-repeats``).

Texts alone, three ways:
- fair: both run the same padded batch (to the longest sentence, and to 64 tokens) through the
  text tower in one piece;
- default settings: minialign's pipeline pads to the longest label, transformers' AlignProcessor
  pads every caption to 64 tokens;
- both given 64-token padding through the public ``get_text_features``, which in minialign cuts
  the padding away (length buckets).

OPENBLAS_THREAD_TIMEOUT is set to 16 before NumPy loads OpenBLAS, unless already set (see
benchmarks/common.py), and recorded in the JSON.

    python benchmarks/zero_shot.py [--repeats 5] [--reference-repeats 2] [--out benchmarks/results/zero_shot_cpu.json]
    python benchmarks/zero_shot.py --repeats 1 --reference-repeats 1   # a quick check of the script
"""

from __future__ import annotations

import os

# Before NumPy loads OpenBLAS, which reads it once (see benchmarks/common.py).
OPENBLAS_GIVEN = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from common import interleaved_ratio, machine, openblas_thread_timeout, timeit, write_json  # noqa: E402
from reference import align_checkpoint  # noqa: E402  (the tests' align-base checkpoint builder)

LABELS = ["dog", "cat", "red car", "small bird", "tree", "house", "child with a ball", "beach", "white star",
          "yellow square"]
TEMPLATE = "This is a photo of {}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference-repeats", type=int, default=2,
                        help="timed runs of the (slow) reference backend")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch
    from transformers import AlignModel as HFModel
    from transformers import AlignProcessor as HFProcessor

    from minialign import AlignModel, AlignProcessor, pipeline

    torch.set_num_threads(os.cpu_count())
    directory = tempfile.mkdtemp(prefix="align-base-")
    align_checkpoint(directory, seed=0)  # full align-base architecture
    ours_model, ours_processor = AlignModel.from_pretrained(directory), AlignProcessor.from_pretrained(directory)
    plain_model = AlignModel.from_pretrained(directory, backend="reference")
    hf_model = HFModel.from_pretrained(directory).eval()
    hf_processor = HFProcessor.from_pretrained(directory)
    image = np.random.default_rng(0).integers(0, 256, (289, 289, 3), dtype=np.uint8)
    sentences = [TEMPLATE.format(label) for label in LABELS]

    def end_to_end(model):
        def run():
            # A fresh pipeline each time, so the label-embedding cache does not hide the text tower.
            classifier = pipeline("zero-shot-image-classification", model=model, processor=ours_processor)
            return classifier(image, candidate_labels=LABELS)
        return run

    ours_end_to_end, plain_end_to_end = end_to_end(ours_model), end_to_end(plain_model)

    def hf_end_to_end():
        inputs = hf_processor(text=sentences, images=image, return_tensors="pt", padding=True)
        with torch.inference_mode():
            return hf_model(**inputs).logits_per_image.softmax(-1)

    ours_tokens_longest = ours_processor(text=sentences, padding="longest")
    ours_tokens_64 = ours_processor(text=sentences)  # AlignProcessor's default: pad to 64
    hf_tokens_longest = hf_processor(text=sentences, return_tensors="pt", padding=True)
    hf_tokens_64 = hf_processor(text=sentences, return_tensors="pt")  # its default: max_length 64

    def ours_text(tokens, model=ours_model):
        # The padded batch through the text tower in one piece, like transformers: the fair
        # comparison. (get_text_features would cut the padding away; see ours_text_bucketed.)
        return lambda: model._project_text(model.text_model(tokens["input_ids"], tokens["attention_mask"]))

    def ours_text_bucketed(tokens):
        return lambda: ours_model.get_text_features(tokens["input_ids"], tokens["attention_mask"])

    def hf_text(tokens):
        def run():
            with torch.inference_mode():
                return hf_model.get_text_features(**tokens)
        return run

    # Same answer before timing anything.
    hf_probs = hf_end_to_end()[0].numpy()

    def score_diff(run):
        scores = {r["label"]: r["score"] for r in run()}
        return max(abs(scores[label] - float(p)) for label, p in zip(LABELS, hf_probs))

    r, r_plain = args.repeats, args.reference_repeats
    result = {
        "benchmark": "zero-shot classification, align-base, one 289x289 image, 10 labels",
        "machine": machine(),
        "openblas_thread_timeout": openblas_thread_timeout(OPENBLAS_GIVEN),
        # "minialign" is the default (numpy) backend; "minialign_reference" the plain-math one.
        "score_max_abs_diff": score_diff(ours_end_to_end),
        "reference_score_max_abs_diff": score_diff(plain_end_to_end),
        "end_to_end": {"minialign": timeit(ours_end_to_end, repeats=r), "transformers": timeit(hf_end_to_end, repeats=r),
                       "minialign_reference": timeit(plain_end_to_end, repeats=r_plain)},
        "texts_fair_longest": {"minialign": timeit(ours_text(ours_tokens_longest), repeats=r),
                               "transformers": timeit(hf_text(hf_tokens_longest), repeats=r),
                               "minialign_reference": timeit(ours_text(ours_tokens_longest, plain_model),
                                                             repeats=r_plain),
                               "tokens": int(ours_tokens_longest["input_ids"].shape[1])},
        "texts_fair_64": {"minialign": timeit(ours_text(ours_tokens_64), repeats=r),
                          "transformers": timeit(hf_text(hf_tokens_64), repeats=r)},
        "texts_default_settings": {"minialign_longest": None, "transformers_64": None},
        # Both sides given 64-token padding; minialign's get_text_features cuts it away.
        "texts_64_get_text_features": {"minialign": timeit(ours_text_bucketed(ours_tokens_64), repeats=r)},
    }
    result["texts_default_settings"] = {"minialign_longest": result["texts_fair_longest"]["minialign"],
                                        "transformers_64": result["texts_fair_64"]["transformers"]}
    ratio = lambda a, b: a["median_s"] / b["median_s"]  # noqa: E731
    result["ratios_reference_over_minialign"] = {
        "end_to_end": ratio(result["end_to_end"]["minialign_reference"], result["end_to_end"]["minialign"]),
        "texts_fair_longest": ratio(result["texts_fair_longest"]["minialign_reference"],
                                    result["texts_fair_longest"]["minialign"]),
    }
    result["ratios_minialign_over_transformers"] = {
        "end_to_end": ratio(result["end_to_end"]["minialign"], result["end_to_end"]["transformers"]),
        "texts_fair_longest": ratio(result["texts_fair_longest"]["minialign"], result["texts_fair_longest"]["transformers"]),
        "texts_fair_64": ratio(result["texts_fair_64"]["minialign"], result["texts_fair_64"]["transformers"]),
        "texts_default_settings": ratio(result["texts_default_settings"]["minialign_longest"],
                                        result["texts_default_settings"]["transformers_64"]),
        "texts_64_get_text_features": ratio(result["texts_64_get_text_features"]["minialign"],
                                            result["texts_fair_64"]["transformers"]),
    }
    # The same ratio measured in alternation (see common.interleaved_ratio): the one to trust on a
    # machine whose speed drifts.
    result["end_to_end_ratio_interleaved"] = interleaved_ratio(ours_end_to_end, hf_end_to_end, repeats=r)
    result["target_ratio_end_to_end"] = 1.5
    write_json(args.out, result)


if __name__ == "__main__":
    main()
