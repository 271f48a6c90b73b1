"""Captions per second: minialign.BertTokenizer beside transformers' BertTokenizer, same run.

    python benchmarks/tokenizer.py [--captions 5000] [--repeats 5] [--out FILE]

Both tokenizers read the same vocab.txt and encode the same generated English captions (the
vocab builder and the caption generator are imported from tests/test_tokenizer.py, so the
benchmark measures what the tests check). Before anything is timed, the two outputs are compared
id for id. Then, for each tokenizer:

- batch:       one call on the whole list, ALIGN's way: padding="max_length", max_length=64,
               truncation=True. transformers' Rust backend encodes a batch on all cores;
- per caption: one call per caption, no padding;
- cold:        minialign only: a fresh tokenizer, so its per-word cache starts empty (the first
               batch pays for normalising every distinct word once);
- uncached:    minialign only, the per-word cache switched off: every word goes through all of
               cleaning, accents, lower-casing, punctuation and WordPiece, every time;
- tokenizers:  for scale, the Rust library alone (``encode_batch``, multi-threaded, no padding
               and no conversion to Python lists): transformers' own floor.

Throughput is captions / best wall time over ``--repeats`` runs (cold: one run per fresh tokenizer).
The template captions have only ~135 distinct words-with-punctuation, so "cold" is close to
warm; "uncached" is the bound for text whose every word is new. The machine is shared: numbers
move by tens of percent between runs, the ratios much less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402

from minialign.tokenizer import BertTokenizer  # noqa: E402
from test_tokenizer import build_vocab, make_captions, reference_tokenizer  # noqa: E402

ALIGN_CALL = dict(padding="max_length", truncation=True, max_length=64)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args()

    import tokenizers
    import transformers

    captions = make_captions(args.captions, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("\n".join(build_vocab()) + "\n", encoding="utf-8")
        ours = BertTokenizer(vocab_file)
        theirs = reference_tokenizer(vocab_file)

        # The reference first: nothing is timed unless the ids agree.
        a, b = ours(captions, **ALIGN_CALL, return_tensors="np"), theirs(captions, **ALIGN_CALL, return_tensors="np")
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            if not np.array_equal(a[key], b[key]):
                raise SystemExit(f"{key} differ from transformers: not timing a wrong tokenizer")
        n_words = sum(len(c.split()) for c in captions)
        n_tokens = int(a["attention_mask"].sum())

        results = {}
        # cold: a fresh tokenizer per run, so every distinct word goes through the whole pipeline
        cold = []
        for _ in range(args.repeats):
            fresh = BertTokenizer(vocab_file)
            start = time.perf_counter()
            fresh(captions, **ALIGN_CALL)
            cold.append(time.perf_counter() - start)
        results["minialign_batch_cold"] = min(cold)
        uncached = BertTokenizer(vocab_file)
        uncached._encode_chunk = uncached._encode_chunk_uncached
        results["minialign_batch_uncached"] = best_time(lambda: uncached(captions, **ALIGN_CALL), args.repeats)
        results["minialign_batch"] = best_time(lambda: ours(captions, **ALIGN_CALL), args.repeats)
        results["transformers_batch"] = best_time(lambda: theirs(captions, **ALIGN_CALL), args.repeats)
        results["minialign_per_caption"] = best_time(lambda: [ours(c) for c in captions], args.repeats)
        results["transformers_per_caption"] = best_time(lambda: [theirs(c) for c in captions], args.repeats)
        results["tokenizers_encode_batch"] = best_time(lambda: theirs.backend_tokenizer.encode_batch(captions),
                                                       args.repeats)
        cache = ours._encode_chunk.cache_info()

    per_second = {name: args.captions / seconds for name, seconds in results.items()}
    print(f"{args.captions} captions, {n_words} words, {n_tokens} tokens (without padding); "
          f"best of {args.repeats}; {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"{'':28s}{'captions/s':>12s}{'ms total':>10s}")
    for name, seconds in results.items():
        print(f"{name:28s}{per_second[name]:12,.0f}{seconds * 1e3:10.1f}")
    ratios = {
        "batch": per_second["minialign_batch"] / per_second["transformers_batch"],
        "batch_cold": per_second["minialign_batch_cold"] / per_second["transformers_batch"],
        "batch_uncached": per_second["minialign_batch_uncached"] / per_second["transformers_batch"],
        "per_caption": per_second["minialign_per_caption"] / per_second["transformers_per_caption"],
    }
    for name, ratio in ratios.items():
        print(f"minialign / transformers, {name}: {ratio:.2f}x")
    print(f"minialign per-word cache: {cache.hits} hits, {cache.misses} misses, {cache.currsize} entries")

    if args.out:
        record = {
            "benchmark": "tokenizer",
            "what": "English captions per second; batch = one call with padding='max_length', max_length=64, "
                    "truncation=True; per_caption = one call per caption; cold = fresh minialign tokenizer "
                    "(empty per-word cache); uncached = per-word cache off; tokenizers_encode_batch = the Rust library "
                    "alone, no padding; transformers' batch calls are multi-threaded (Rust), minialign is one thread",
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                # other work on the machine skews every number; this is the 1-minute load at the end
                "load_average_1min": os.getloadavg()[0],
            },
            "versions": {"numpy": np.__version__, "transformers": transformers.__version__,
                         "tokenizers": tokenizers.__version__},
            "captions": args.captions,
            "words": n_words,
            "tokens": n_tokens,
            "repeats": args.repeats,
            "seconds": results,
            "captions_per_second": per_second,
            "ratio_minialign_over_transformers": ratios,
            "cache": {"hits": cache.hits, "misses": cache.misses, "entries": cache.currsize},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
