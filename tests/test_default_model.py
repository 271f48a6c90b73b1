"""The embedded default model (minialign/models/align-nano), as shipped in the package.

It is the output of `minialign train` (see its run_args.json); these tests check that it is
complete, small, usable with no arguments, and that the zero-shot accuracy its training log
reports is what it actually scores on the held-out test split.
"""

import json
import os

import numpy as np

from minialign import AlignModel, pipeline, synthetic
from minialign.cli import main
from minialign.pipelines import DEFAULT_MODEL_DIR, default_model_dir
from minialign.tokenizer import BertTokenizer
from minialign.training import recipe

FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "preprocessor_config.json",
         "labels.json", "train_log.jsonl", "run_args.json")


def test_the_default_model_is_complete_and_small():
    assert default_model_dir() == DEFAULT_MODEL_DIR
    for name in FILES:
        assert os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, name)), name
    assert not os.path.exists(os.path.join(DEFAULT_MODEL_DIR, "checkpoint"))  # training state is not shipped
    size = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(DEFAULT_MODEL_DIR) for f in files)
    assert size <= 10 * 2**20, f"{size / 2**20:.1f} MiB"
    examples = os.listdir(os.path.join(DEFAULT_MODEL_DIR, "examples"))
    assert examples and all(e.endswith(".png") for e in examples)


def test_classify_with_no_arguments_runs_the_default_model_on_its_examples(capsys):
    assert main(["classify", "--json", "--top", "3"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == len(os.listdir(os.path.join(DEFAULT_MODEL_DIR, "examples")))
    labels = json.loads(open(os.path.join(DEFAULT_MODEL_DIR, "labels.json")).read())
    for r in results:
        assert len(r["results"]) == 3 and all(x["label"] in labels for x in r["results"])


def test_pipeline_with_model_none_uses_the_default_model():
    classifier = pipeline("zero-shot-image-classification")
    image = synthetic.generate(1, split="test", seed=7, image_size=recipe.IMAGE_SIZE)[0].image
    scores = classifier(image, candidate_labels=["red circle", "blue star"])
    assert {s["label"] for s in scores} == {"red circle", "blue star"}
    assert abs(sum(s["score"] for s in scores) - 1) < 1e-5


def _held_out_top1(n: int, seed: int) -> float:
    """The shipped model's zero-shot top-1 on n held-out test images of ``seed``, as training scores it."""
    test = synthetic.generate(n, split="test", seed=seed, image_size=recipe.IMAGE_SIZE)
    class_names = [synthetic.class_name(s, c) for s, c in synthetic.all_classes()]
    return recipe.zero_shot_top1(AlignModel.from_pretrained(DEFAULT_MODEL_DIR), BertTokenizer.from_pretrained(DEFAULT_MODEL_DIR),
                                np.stack([e.image for e in test]), np.array([e.label for e in test]), class_names)


def test_the_logged_zero_shot_accuracy_is_what_the_model_scores():
    """Recompute the last evaluation of the training log from the shipped files: the same
    held-out images (the seed of run_args.json), the same prompts, the same metric."""
    with open(os.path.join(DEFAULT_MODEL_DIR, "run_args.json")) as fh:
        run_args = json.load(fh)
    with open(os.path.join(DEFAULT_MODEL_DIR, "train_log.jsonl")) as fh:
        logged = [json.loads(line) for line in fh if line.strip()]
    last_eval = [r["eval"] for r in logged if "eval" in r][-1]
    accuracy = _held_out_top1(recipe.TEST_EXAMPLES, seed=run_args["seed"])
    assert abs(accuracy - last_eval["zero_shot_top1"]) < 1e-9
    assert accuracy > 3 * last_eval["chance"]  # far above chance (1/36)


def test_the_default_model_classifies_fresh_held_out_pairs():
    """The project's bar: >= 90% zero-shot top-1 on held-out (shape, colour) pairs, on 600 images
    that training never generated and no choice of recipe looked at (seed 97: neither the
    training seed nor 2026, on which recipes were compared). Scored as in training. The shipped
    model gets 99.3% (benchmarks/results/held_out_align-nano.json); float32 differences across
    machines move a handful of images at most."""
    accuracy = _held_out_top1(600, seed=97)
    assert accuracy >= 0.90, f"zero-shot top-1 on fresh held-out images: {accuracy:.3f}"


def test_classify_with_no_arguments_shows_the_top_5(capsys):
    assert main(["classify", "--json"]) == 0
    assert all(len(r["results"]) == 5 for r in json.loads(capsys.readouterr().out))


def test_the_shipped_model_loads_by_name_everywhere(capsys):
    """"align-nano" names the shipped model for the models, the processor, the tokenizer, the
    pipeline and --model; the README's Python example gives the numbers it shows."""
    from PIL import Image, ImageDraw

    from minialign import AlignProcessor, AlignTextModel, AlignVisionModel, BertTokenizer

    directory = default_model_dir()
    assert AlignModel.from_pretrained("align-nano").params.keys() == AlignModel.from_pretrained(directory).params.keys()
    AlignTextModel.from_pretrained("align-nano")
    AlignVisionModel.from_pretrained("align-nano")
    assert AlignProcessor.from_pretrained("align-nano").tokenizer.vocab == BertTokenizer.from_pretrained(directory).vocab
    image = Image.new("RGB", (48, 48), "white")
    ImageDraw.Draw(image).ellipse((8, 8, 40, 40), fill="red")
    best = pipeline("zero-shot-image-classification", model="align-nano")(
        image, candidate_labels=["red circle", "blue square", "green triangle"])[0]
    assert best["label"] == "red circle" and round(best["score"], 2) == 1.0  # as the README shows
    assert main(["classify", "--model", "align-nano", "--top", "1"]) == 0
    assert "align-nano" in capsys.readouterr().out


def test_an_unknown_model_name_lists_the_shipped_ones(capsys):
    assert main(["classify", "--model", "align-huge"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model directory not found: align-huge" in err and "align-nano" in err


def test_labels_the_model_cannot_know_get_a_one_line_warning_each(capsys):
    """'cat' and 'dog' are in none of align-nano's class names (they read as pieces, ca ##t), and
    'zebra' is not even in its vocabulary ([UNK]): both get a warning line naming the words."""
    assert main(["classify", "--labels", "cat", "dog", "zebra", "red circle", "--top", "1"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(warnings) == 2 and all(line.startswith("minialign classify: warning: ") for line in warnings)
    assert "'cat', 'dog', 'zebra' appear in none of the 36 class names" in warnings[0]
    assert "vocabulary does not know 'zebra'" in warnings[1] and "'cat'" not in warnings[1]
    assert main(["classify", "--labels", "red circle", "blue square", "--top", "1"]) == 0
    assert capsys.readouterr().err == ""  # known words: no warning


def test_a_huge_label_list_runs_and_says_so_in_one_line(capsys):
    labels = [f"label{i}" for i in range(2000)]
    assert main(["classify", "--labels", *labels, "--top", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    assert all(len(entry["results"]) == 2 for entry in json.loads(out))
    assert err.count("\n") == 1 and "'label0', 'label1', 'label2', 'label3', 'label4' and 1995 more" in err
