"""The ``minialign`` command: classify, embed, search, parity, bench, train, kernels, exercise.

Human-readable output by default, ``--json`` for scripts. One rule for every subcommand, applied
in ``main``:

- an error the user can cause (a bad argument, a missing or unreadable file, a checkpoint that
  does not fit, a diverged training run) is one line on stderr naming the input, exit 2;
- Ctrl-C is one line on stderr, exit 130, after the command saved what it could (an embed index
  keeps its finished batches, a training run its last finished step);
- a closed stdout (``minialign classify | head -1``) ends quietly, exit 141 (128 + SIGPIPE, what a
  program killed by the signal reports);
- warnings (labels the vocabulary does not know) are one line on stderr each.

A parity report with a layer over tolerance exits 1, and so does an exercise that does not pass
its check (``minialign exercise check``: its report is the output, on stdout). Progress goes to
stderr, only where a person watches (a terminal, no ``--json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import warnings

from . import __version__
from .backends import BACKENDS, DEFAULT_BACKEND, DTYPES
from .checkpoint import CheckpointError
from .config import ConfigError
from .hub import DEFAULT_MODEL
from .image_processing import ImageInputError, ImageTooLargeError

# Errors that mean "the user's input is wrong", not "minialign has a bug". OSError covers missing,
# unreadable and looping paths; FloatingPointError is a training run that diverged (train_loop
# stops at the first non-finite loss and says to lower the learning rate).
USER_ERRORS = (ValueError, OSError, CheckpointError, ConfigError, ImageInputError, FloatingPointError)


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        shown = not (action.default is None or action.default is False or action.default == argparse.SUPPRESS
                     or action.required)
        return f"{action.help} (default: {action.default})" if shown and action.help else action.help


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line like every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def _nonnegative_float(text: str) -> float:
    value = _float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, got {text!r}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="MODEL",
                        help="a model directory, the name of a model shipped with minialign, or a cached hub id")
    parser.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                        help="numpy: fast CPU; reference: the plain NumPy math, slow; "
                             "triton: a CUDA GPU, through the Triton kernels (needs the [gpu] extra)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="compute dtype (triton backend only)")
    parser.add_argument("--max-image-pixels", type=_positive_int, default=None, metavar="N",
                        help="Pillow's decompression-bomb limit, PIL.Image.MAX_IMAGE_PIXELS: warn above N pixels, "
                             "refuse above 2 * N (default N = 89478485); raise it only for files you trust")


def _json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts (and no progress bar)")


def build_parser() -> argparse.ArgumentParser:
    formatter = _HelpFormatter
    parser = _Parser(prog="minialign", description="ALIGN from scratch, in NumPy.", formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"minialign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser,
                                help="what to do; `minialign COMMAND --help` describes each")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=formatter)

    p = command("classify", "zero-shot classification of images against label names")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files (none: the example images shipped with the model, if any)")
    p.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                   help="candidate labels (none: the model's own class names from its labels.json)")
    p.add_argument("--template", action="append", default=None, metavar="TEMPLATE",
                   help="a sentence with {} for the label; repeat it for a prompt ensemble "
                        "(none: 'This is a photo of {}.')")
    p.add_argument("--top", type=_positive_int, default=None, metavar="N",
                   help="show only the best N labels per image (none: all of them; 5 on the shipped examples)")
    _model_arg(p)
    _json_arg(p)

    p = command("embed", "embed a folder of images into an index file (resumable)")
    p.add_argument("folder", metavar="FOLDER", help="the folder of images (searched recursively)")
    p.add_argument("--out", required=True, metavar="INDEX",
                   help="the index file to write (a .safetensors file); an existing one is resumed")
    p.add_argument("--batch-size", type=_positive_int, default=16, metavar="N", help="images per forward pass")
    _model_arg(p)
    _json_arg(p)

    p = command("search", "search an index by text (or by an image with --image)")
    p.add_argument("index", metavar="INDEX", help="an index file written by minialign embed")
    p.add_argument("query", metavar="QUERY", help="a text query, or an image path with --image")
    p.add_argument("-k", type=_positive_int, default=5, metavar="N", help="how many results to show")
    p.add_argument("--image", action="store_true", help="QUERY is an image file")
    p.add_argument("--force", action="store_true", help="search even if the index was built with another model")
    _model_arg(p)
    _json_arg(p)

    p = command("parity", "compare every layer with transformers (needs torch and transformers)")
    p.add_argument("--model", required=True, metavar="MODEL", help="model directory, shipped model name or hub id")
    _json_arg(p)

    p = command("bench", "time zero-shot classification stage by stage")
    _model_arg(p)
    p.add_argument("--num-labels", type=_positive_int, default=10, metavar="N", help="number of candidate labels")
    p.add_argument("--repeats", type=_positive_int, default=3, metavar="N",
                   help="timings per stage (the fastest is reported)")
    _json_arg(p)

    from .training.recipe import BATCH_SIZE, CONFIGS, WEIGHT_DECAY  # the recipe's defaults, shown as values in --help

    p = command("train", "train a tiny ALIGN on the synthetic dataset of coloured shapes")
    p.add_argument("--config", choices=CONFIGS, default="nano", help="model size")
    p.add_argument("--steps", type=_positive_int, required=True, metavar="N", help="number of optimiser steps")
    p.add_argument("--out", required=True, metavar="DIR", help="where the model, its log and checkpoints go")
    p.add_argument("--batch-size", type=_positive_int, default=BATCH_SIZE, metavar="N", help="pairs per step")
    p.add_argument("--lr", type=_positive_float, default=3e-3, help="peak learning rate (warmup, then cosine decay)")
    p.add_argument("--weight-decay", type=_nonnegative_float, default=WEIGHT_DECAY,
                   help="AdamW weight decay on matrices and embeddings")
    p.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the data, the weights and the order")
    p.add_argument("--eval-every", type=_nonnegative_int, default=100, metavar="K",
                   help="zero-shot evaluation every K steps (0: only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint with the same arguments")
    _json_arg(p)

    p = command("kernels", "the kernel lab: the Triton kernels compiled for a named GPU, no GPU needed")
    kernels = p.add_subparsers(dest="kernels_command", required=True, metavar="ACTION", parser_class=_Parser,
                               help="what to do; `minialign kernels report --help` describes it")
    p = kernels.add_parser("report", formatter_class=formatter,
                           help="compile every kernel align-base launches; registers, SASS, roofline prediction",
                           description="Compile every kernel specialisation one align-base forward launches for "
                                       "the device's GPU (no GPU needed; needs the [gpu] extra), read registers, "
                                       "spills, shared memory and the SASS, and predict each launch's time with "
                                       "a roofline model (a lower bound, not a measurement).")
    p.add_argument("--device", choices=("h100", "a100", "all"), default="h100",
                   help="the GPU to compile for: h100 (sm_90a) or a100 (sm_80)")
    p.add_argument("--dtype", choices=("bfloat16", "float32", "all"), default="bfloat16", help="compute dtype")
    p.add_argument("--image-batch", type=_positive_int, default=64, metavar="N", help="images per vision forward")
    p.add_argument("--text-batch", type=_positive_int, default=256, metavar="N", help="texts per text forward")
    p.add_argument("--text-length", type=_positive_int, default=64, metavar="T", help="tokens per text")
    p.add_argument("--packed-batch", type=_nonnegative_int, default=256, metavar="N",
                   help="captions of 8-20 tokens in the packed text forward (0: none)")
    p.add_argument("--asm", default=None, metavar="DIR", help="also write each specialisation's PTX and SASS into DIR")
    _json_arg(p)

    p = command("exercise", "course exercises: re-implement an op, have it checked against minialign's own")
    exercise = p.add_subparsers(dest="exercise_command", required=True, metavar="ACTION", parser_class=_Parser,
                                help="what to do; `minialign exercise ACTION --help` describes each")
    p = exercise.add_parser("list", formatter_class=formatter, help="list the exercises, with their files and docs pages",
                            description="List the exercises: number, title, the file to edit (in "
                                        "tutorials/exercises/) and the docs page that explains it.")
    _json_arg(p)
    p = exercise.add_parser("check", formatter_class=formatter, help="check one exercise (exit 0: passed, 1: not yet)",
                            description="Run the student's function of one exercise on seeded inputs and compare it "
                                        "with minialign's reference (and torch, where installed): the first wrong "
                                        "element, the max error and a hint for a known mistake. Exit 0 when it "
                                        "passes, 1 when it does not (yet).")
    p.add_argument("number", metavar="NUMBER", help="the exercise's number, e.g. 05 (see `minialign exercise list`)")
    p.add_argument("--dir", default=None, metavar="FOLDER",
                   help="the folder of exercise files (none: ./tutorials/exercises, ./exercises or ., the first "
                        "that holds them)")
    _json_arg(p)
    return parser


def _load(args):
    from .align_model import AlignModel
    from .hub import resolve_model_dir
    from .processing import AlignProcessor

    directory = resolve_model_dir(args.model)
    model = AlignModel.from_pretrained(directory, backend=args.backend, dtype=args.dtype)
    return model, AlignProcessor.from_pretrained(directory), directory


def _class_names(directory: str) -> list[str] | None:
    """The model's own class names (``labels.json`` beside a model trained by minialign), if any."""
    path = os.path.join(directory, "labels.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _bundled_examples(directory: str) -> list[str]:
    """The example images shipped next to a model (``examples/*.png`` in its directory)."""
    import glob

    return sorted(glob.glob(os.path.join(directory, "examples", "*.png")))


def _progress(args, total: int, desc: str, unit: str = "img"):
    from .progress import progress

    return progress(total, desc, unit=unit, enabled=not args.json)


def cmd_classify(args) -> int:
    from .pipelines import DEFAULT_TEMPLATE, pipeline

    model, processor, directory = _load(args)
    classes = _class_names(directory)
    if args.labels is not None and classes is not None:
        _hint_unseen_words(args.labels, classes, args.model)
    if not args.images or args.labels is None:  # the main job: a model on its own examples and classes
        if not args.images:
            args.images = _bundled_examples(directory)
            if not args.images:
                raise ValueError(f"no IMAGE given, and the model {args.model} ships no example images; "
                                 "pass image files")
            if args.top is None:
                args.top = 5  # of the 36 class names, the best few are what a reader looks at
        if args.labels is None:
            if classes is None:
                raise ValueError(f"no --labels given, and the model {args.model} has no labels.json; "
                                 "pass --labels LABEL ...")
            args.labels = classes
    classifier = pipeline("zero-shot-image-classification", model=model, processor=processor)
    templates = args.template or DEFAULT_TEMPLATE
    results = []
    with _progress(args, len(args.images), "classifying") as bar:
        for start in range(0, len(args.images), 32):  # batches: the label embeddings are cached
            chunk = args.images[start:start + 32]
            results += classifier(list(chunk), candidate_labels=args.labels, hypothesis_template=templates)
            bar.update(len(chunk))
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


def _hint_unseen_words(labels: list[str], classes: list[str], model: str) -> None:
    """A model trained by minialign knows the world of its class names: say so when the labels
    use words that none of them contains (they come out near-uniform, which is no bug)."""
    from .pipelines import few

    known = {word for name in classes for word in name.lower().split()}
    unseen = list(dict.fromkeys(w for label in labels for w in label.lower().split() if w not in known))
    if unseen:
        warnings.warn(f"{few(unseen)} appear in none of the {len(classes)} class names the model "
                      f"{model} was trained on (its labels.json, e.g. {classes[0]!r}): expect near-uniform scores")


def cmd_embed(args) -> int:
    from .retrieval import check_embed_paths, embed_folder

    check_embed_paths(args.folder, args.out)  # the folder, the output path: before the model loads
    model, processor, directory = _load(args)
    report = embed_folder(model, processor, args.folder, args.out, batch_size=args.batch_size,
                          model_id=args.model, progress=not args.json)
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2))
    else:
        print(report.summary())
    return 0


def cmd_search(args) -> int:
    from .retrieval import check_index_model, check_text_query, load_index, search_image, search_text

    index = load_index(args.index)
    if not args.image:
        check_text_query(args.query)  # an empty query: before the model loads
    model, processor, _ = _load(args)
    note = check_index_model(index, model, model_id=args.model, force=args.force)  # another model: an error
    if note:
        warnings.warn(note)  # one "minialign search: warning: ..." line
    find = search_image if args.image else search_text
    hits = find(model, processor, index, args.query, k=args.k, force=True)  # the model was checked just above
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
    labels = [f"label number {i}" for i in range(args.num_labels)]
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
    with _progress(args, len(stages) * args.repeats, "timing", unit="run") as bar:
        for name, fn in stages.items():
            samples = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - start)
                bar.update(1)
            timings[name] = min(samples)
    timings["total"] = sum(timings.values())
    if args.json:
        print(json.dumps({"labels": args.num_labels, "seconds": timings}, indent=2))
    else:
        for name, seconds in timings.items():
            print(f"{name:>18}  {seconds * 1e3:9.1f} ms")
    return 0


def cmd_train(args) -> int:
    from .training.recipe import run_training

    summary = run_training(args.out, config=args.config, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                           seed=args.seed, eval_every=args.eval_every, resume=args.resume,
                           weight_decay=args.weight_decay, progress=not args.json)
    if args.json:
        print(json.dumps(summary, indent=2))
    elif summary.get("already_done"):
        print(f"already trained to step {summary['steps']}; nothing to do (model in {summary['out_dir']})")
    else:
        print(f"trained {summary['steps']} steps, final loss {summary['final_loss']}, eval {summary['eval']}; "
              f"model saved to {summary['out_dir']}")
    return 0


def cmd_kernels(args) -> int:
    """``minialign kernels report``: see minialign/kernels/report.py."""
    try:
        import torch  # noqa: F401
        import triton  # noqa: F401
    except ImportError as error:
        raise ValueError(f"the kernel lab needs torch and triton ({error.name} is not installed): "
                         "pip install 'minialign[gpu]' (no GPU is needed)") from None
    from .kernels.report import analyse, format_report

    devices = ("h100", "a100") if args.device == "all" else (args.device,)
    dtypes = ("bfloat16", "float32") if args.dtype == "all" else (args.dtype,)
    reports = []
    for device in devices:
        for dtype in dtypes:
            with _progress(args, 0, f"compiling for {device}, {dtype}", unit="kernel") as bar:
                def progress(done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                asm = None if args.asm is None else os.path.join(args.asm, f"{device}-{dtype}")
                reports.append(analyse(device, dtype, image_batch=args.image_batch, text_batch=args.text_batch,
                                       text_length=args.text_length, packed_batch=args.packed_batch, asm_dir=asm,
                                       progress=progress))
            if not args.json:
                print(format_report(reports[-1]) + "\n")
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=1))
    return 0


def cmd_exercise(args) -> int:
    """``minialign exercise list`` and ``minialign exercise check NUMBER``: see minialign/exercises/."""
    from .exercises import EXERCISES, check_exercise

    if args.exercise_command == "list":
        rows = [{"number": e.number, "title": e.title, "file": f"tutorials/exercises/{e.file}", "teaches": e.teaches,
                 "docs": e.docs_path, "check": f"minialign exercise check {e.number}"} for e in EXERCISES.values()]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print(f"{row['number']}  {row['title']}\n    {row['file']}  (read {row['docs']})")
        return 0
    result = check_exercise(args.number, args.dir)
    print(json.dumps(result.to_json(), indent=2) if args.json else result.text())
    return 0 if result.passed else 1


COMMANDS = {"classify": cmd_classify, "embed": cmd_embed, "search": cmd_search, "parity": cmd_parity,
            "bench": cmd_bench, "train": cmd_train, "kernels": cmd_kernels, "exercise": cmd_exercise}


def _one_line(text: str) -> str:
    """A multi-line message (a checkpoint error's list of offending keys) joined with "; "."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version (0) or a bad argument (2, one line already printed)
        return done.code
    name = f"minialign {args.command}"

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"{name}: warning: {_one_line(str(message))}", file=sys.stderr)

    from PIL import Image

    pixel_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            if getattr(args, "max_image_pixels", None) is not None:
                Image.MAX_IMAGE_PIXELS = args.max_image_pixels  # for this command's images only (restored below)
            return COMMANDS[args.command](args)
    except BrokenPipeError:  # before USER_ERRORS: it is an OSError too
        # The reader of stdout has gone (`| head`): nothing more to say, and Python must not
        # complain when it flushes stdout at exit, so stdout now points at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except USER_ERRORS as err:
        hint = "; from the command: --max-image-pixels N" if isinstance(err, ImageTooLargeError) else ""
        print(f"{name}: error: {_one_line(str(err)) or type(err).__name__}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        saved = _one_line(str(interrupt))  # what the command saved, when it says
        print(f"{name}: interrupted" + (f"; {saved}" if saved else ""), file=sys.stderr)
        return 130
    finally:
        Image.MAX_IMAGE_PIXELS = pixel_limit  # main() can run again in one process (tests, notebooks)
