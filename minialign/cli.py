"""The ``minialign`` command: classify, embed, search, parity, bench, train.

Human-readable output by default, ``--json`` for scripts. A bad argument, a missing or unreadable
file, or a checkpoint that does not fit is reported as one line on stderr with exit code 2; a
parity report with a layer over tolerance exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from .checkpoint import CheckpointError
from .config import ConfigError
from .backends import BACKENDS, DEFAULT_BACKEND, DTYPES
from .image_processing import ImageInputError

# Errors that mean "the user's input is wrong", not "minialign has a bug".
# FloatingPointError: a training run that diverged (train_loop stops at the first non-finite loss
# and says to lower the learning rate): a setting to change, not a bug to report.
USER_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, PermissionError, CheckpointError, ConfigError,
               ImageInputError, FloatingPointError)


def _model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="model directory or cached hub id (default: the embedded model)")
    parser.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                        help="numpy (fast CPU, the default), reference (the plain NumPy lesson, slow) or triton (a CUDA GPU, through the Triton kernels)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="triton backend only: compute dtype")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minialign", description="ALIGN from scratch, in NumPy.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("classify", help="zero-shot classification of images against label names")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files (default: the example images bundled with the default model)")
    p.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                   help="candidate labels (default: the default model's own class names)")
    p.add_argument("--template", action="append", default=None, metavar="TEMPLATE",
                   help="sentence with {} for the label; repeat for a prompt ensemble "
                        "(default: 'This is a photo of {}.')")
    p.add_argument("--top", type=int, default=None,
                   help="show only the best N labels (default: all; 5 on the bundled examples)")
    _model_arg(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("embed", help="embed a folder of images into an index file")
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--out", required=True, metavar="INDEX")
    p.add_argument("--batch-size", type=int, default=16)
    _model_arg(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("search", help="search an index by text (or by an image with --image)")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("query", metavar="QUERY", help="a text query, or an image path with --image")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--image", action="store_true", help="QUERY is an image file")
    _model_arg(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("parity", help="compare every layer with transformers (needs torch + transformers)")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("bench", help="time zero-shot classification stage by stage")
    _model_arg(p)
    p.add_argument("--labels", type=int, default=10, help="number of candidate labels")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("train", help="train a tiny ALIGN on the synthetic dataset (needs minialign.training)")
    p.add_argument("--config", default="nano", help="model size (nano)")
    p.add_argument("--steps", type=int, required=True, help="number of optimiser steps")
    p.add_argument("--out", required=True, metavar="DIR", help="where the model, log and checkpoints go")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (warmup, then cosine decay)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="AdamW weight decay on matrices and embeddings (default: minialign.training.recipe.WEIGHT_DECAY)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=100, help="zero-shot eval every K steps (0: only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint with the same arguments")
    p.add_argument("--json", action="store_true")
    return parser


def _model_dir(model: str | None) -> str:
    from .hub import resolve_model_dir
    from .pipeline import default_model_dir

    return default_model_dir() if model is None else resolve_model_dir(model)


def _load(args):
    from .align_model import AlignModel
    from .processing import AlignProcessor

    directory = _model_dir(args.model)
    backend = getattr(args, "backend", DEFAULT_BACKEND)  # parity compares with transformers: always NumPy
    model = AlignModel.from_pretrained(directory, backend=backend, dtype=getattr(args, "dtype", "float32"))
    return model, AlignProcessor.from_pretrained(directory), directory


def _bundled_examples(directory: str) -> tuple[list[str], list[str]]:
    """The example images and class names shipped next to the default model
    (``examples/*.png`` and ``labels.json`` in its directory)."""
    import glob
    import os

    images = sorted(glob.glob(os.path.join(directory, "examples", "*.png")))
    labels_file = os.path.join(directory, "labels.json")
    if not images or not os.path.isfile(labels_file):
        raise FileNotFoundError(f"{directory} has no bundled examples/labels.json; pass IMAGE... and --labels")
    with open(labels_file, encoding="utf-8") as fh:
        return images, json.load(fh)


def cmd_classify(args) -> int:
    from .pipeline import DEFAULT_TEMPLATE, pipeline

    model, processor, directory = _load(args)
    if not args.images or args.labels is None:  # the main job: a model on its bundled examples
        examples, classes = _bundled_examples(directory)
        args.images = args.images or examples
        args.labels = args.labels or classes
        if args.top is None:
            args.top = 5  # of the 36 class names, the best few are what a reader looks at
    classifier = pipeline("zero-shot-image-classification", model=model, processor=processor)
    results = classifier(list(args.images), candidate_labels=args.labels,
                         hypothesis_template=args.template or DEFAULT_TEMPLATE)
    if args.top is not None:
        results = [r[: args.top] for r in results]
    if args.json:
        print(json.dumps([{"image": image, "results": r} for image, r in zip(args.images, results)], indent=2))
        return 0
    for image, ranked in zip(args.images, results):
        print(image)
        for r in ranked:
            print(f"  {r['score']:6.1%}  {r['label']}")
    return 0


def cmd_embed(args) -> int:
    from .retrieval import embed_folder

    model, processor, directory = _load(args)
    report = embed_folder(model, processor, args.folder, args.out, batch_size=args.batch_size,
                          model_id=args.model or directory)
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2))
    else:
        print(report.summary())
    return 0


def cmd_search(args) -> int:
    from .retrieval import load_index, search_image, search_text

    if args.k < 1:
        raise ValueError(f"-k must be at least 1, got {args.k}")
    index = load_index(args.index)
    model, processor, _ = _load(args)
    find = search_image if args.image else search_text
    hits = find(model, processor, index, args.query, k=args.k)
    if args.json:
        print(json.dumps(hits, indent=2))
    else:
        for hit in hits:
            print(f"{hit['score']:7.4f}  {hit['path']}")
    return 0


def cmd_parity(args) -> int:
    from .parity import MissingReferenceError, format_report, parity_report

    try:
        report = parity_report(args.model)
    except MissingReferenceError as err:  # an install problem of the user's, not a minialign bug
        raise ValueError(str(err)) from None
    print(json.dumps(report.to_json(), indent=2) if args.json else format_report(report))
    return 0 if report.ok else 1


def cmd_bench(args) -> int:
    """Time each stage of zero-shot classification of one image on the chosen model."""
    import numpy as np

    model, processor, _ = _load(args)
    labels = [f"label number {i}" for i in range(args.labels)]
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    sentences = [f"This is a photo of {label}." for label in labels]
    stages = {
        "tokenize": lambda: processor(text=sentences, padding="longest"),
        "preprocess image": lambda: processor(images=[image]),
    }
    tokens, pixels = stages["tokenize"](), stages["preprocess image"]()["pixel_values"]
    stages["text tower"] = lambda: model.get_text_features(tokens["input_ids"], tokens["attention_mask"])
    stages["vision tower"] = lambda: model.get_image_features(pixels)
    timings = {}
    for name, fn in stages.items():
        samples = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        timings[name] = min(samples)
    timings["total"] = sum(timings.values())
    if args.json:
        print(json.dumps({"labels": args.labels, "seconds": timings}, indent=2))
    else:
        for name, seconds in timings.items():
            print(f"{name:>18}  {seconds * 1e3:9.1f} ms")
    return 0


def cmd_train(args) -> int:
    from .training.recipe import WEIGHT_DECAY, run_training

    weight_decay = WEIGHT_DECAY if args.weight_decay is None else args.weight_decay
    summary = run_training(args.out, config=args.config, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                           seed=args.seed, eval_every=args.eval_every, resume=args.resume, weight_decay=weight_decay)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"trained {summary['steps']} steps, final loss {summary['final_loss']}, eval {summary['eval']}; "
              f"model saved to {summary['out_dir']}")
    return 0


COMMANDS = {"classify": cmd_classify, "embed": cmd_embed, "search": cmd_search, "parity": cmd_parity,
            "bench": cmd_bench, "train": cmd_train}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse itself exits 2 on bad arguments
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as err:
        # One line, all of it: a checkpoint error's list of offending keys is joined with "; ".
        message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
        print(f"minialign {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
