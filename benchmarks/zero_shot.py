"""Zero-shot classification end to end: minialign (NumPy) vs transformers (torch CPU), same run.

One 289x289 image against 10 labels on the align-base architecture (random non-trivial
weights; speed does not depend on their values): preprocessing, tokenizing and both towers.
Target: minialign <= 1.5x transformers' time.

Texts alone, three ways:
- fair: both run the same padded batch (to the longest sentence, and to 64 tokens) through the
  text tower in one piece;
- default settings: minialign's pipeline pads to the longest label, transformers' AlignProcessor
  pads every caption to 64 tokens;
- both given 64-token padding through the public ``get_text_features``, which in minialign cuts
  the padding away (length buckets).

    python benchmarks/zero_shot.py [--repeats 5] [--out benchmarks/results/zero_shot_cpu.json]
"""

from __future__ import annotations

import minialign  # noqa: F401  (first: it sets OPENBLAS_THREAD_TIMEOUT before NumPy loads OpenBLAS)
import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from common import interleaved_ratio, machine, timeit, write_json  # noqa: E402
from reference import align_checkpoint  # noqa: E402  (the tests' align-base checkpoint builder)

LABELS = ["dog", "cat", "red car", "small bird", "tree", "house", "child with a ball", "beach", "white star",
          "yellow square"]
TEMPLATE = "This is a photo of {}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
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
    hf_model = HFModel.from_pretrained(directory).eval()
    hf_processor = HFProcessor.from_pretrained(directory)
    image = np.random.default_rng(0).integers(0, 256, (289, 289, 3), dtype=np.uint8)
    sentences = [TEMPLATE.format(label) for label in LABELS]

    def ours_end_to_end():
        # A fresh pipeline each time, so the label-embedding cache does not hide the text tower.
        classifier = pipeline("zero-shot-image-classification", model=ours_model, processor=ours_processor)
        return classifier(image, candidate_labels=LABELS)

    def hf_end_to_end():
        inputs = hf_processor(text=sentences, images=image, return_tensors="pt", padding=True)
        with torch.inference_mode():
            return hf_model(**inputs).logits_per_image.softmax(-1)

    ours_tokens_longest = ours_processor(text=sentences, padding="longest")
    ours_tokens_64 = ours_processor(text=sentences)  # AlignProcessor's default: pad to 64
    hf_tokens_longest = hf_processor(text=sentences, return_tensors="pt", padding=True)
    hf_tokens_64 = hf_processor(text=sentences, return_tensors="pt")  # its default: max_length 64

    def ours_text(tokens):
        # The padded batch through the text tower in one piece, like transformers: the fair
        # comparison. (get_text_features would cut the padding away; see ours_text_bucketed.)
        return lambda: ours_model._project_text(ours_model.text_model(tokens["input_ids"], tokens["attention_mask"]))

    def ours_text_bucketed(tokens):
        return lambda: ours_model.get_text_features(tokens["input_ids"], tokens["attention_mask"])

    def hf_text(tokens):
        def run():
            with torch.inference_mode():
                return hf_model.get_text_features(**tokens)
        return run

    # Same answer before timing anything.
    ours_scores = {r["label"]: r["score"] for r in ours_end_to_end()}
    hf_probs = hf_end_to_end()[0].numpy()
    score_diff = max(abs(ours_scores[label] - float(p)) for label, p in zip(LABELS, hf_probs))

    r = args.repeats
    result = {
        "benchmark": "zero-shot classification, align-base, one 289x289 image, 10 labels",
        "machine": machine(),
        "score_max_abs_diff": score_diff,
        "end_to_end": {"minialign": timeit(ours_end_to_end, repeats=r), "transformers": timeit(hf_end_to_end, repeats=r)},
        "texts_fair_longest": {"minialign": timeit(ours_text(ours_tokens_longest), repeats=r),
                               "transformers": timeit(hf_text(hf_tokens_longest), repeats=r),
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
