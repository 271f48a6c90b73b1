"""Zero-shot classification against transformers' pipeline, and prompt ensembling by hand."""

import numpy as np
import pytest
from PIL import Image

import reference
from helpers import assert_close
from minialign import AlignModel, AlignProcessor, pipeline
from minialign.loss import l2_normalize

LABELS = ["dog", "cat", "red car", "small bird", "tree"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("zero-shot")
    reference.align_checkpoint(
        directory, seed=5, temperature=0.05, projection_dim=64,
        text=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48),
        vision=dict(width_coefficient=0.2, depth_coefficient=0.3, hidden_dim=64),
    )
    return directory


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, (h, w) in enumerate([(120, 160), (289, 289), (50, 70)]):
        path = folder / f"image{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_scores_match_transformers_pipeline(checkpoint, images):
    from transformers import pipeline as hf_pipeline

    ours = pipeline("zero-shot-image-classification", model=checkpoint)
    theirs = hf_pipeline("zero-shot-image-classification", model=str(checkpoint), device="cpu")
    for path in images:
        a = ours(path, candidate_labels=LABELS)
        b = theirs(path, candidate_labels=LABELS)
        assert [r["label"] for r in a] == [r["label"] for r in b], (a, b)
        assert_close([r["score"] for r in a], [r["score"] for r in b], atol=1e-4, rtol=0, name=f"scores {path}")
        assert abs(sum(r["score"] for r in a) - 1) < 1e-5
    # a custom template and a list of images
    a = ours(images, candidate_labels=LABELS, hypothesis_template="a picture of a {}")
    b = [theirs(p, candidate_labels=LABELS, hypothesis_template="a picture of a {}") for p in images]
    for x, y in zip(a, b):
        assert_close([r["score"] for r in x], [r["score"] for r in y], atol=1e-4, rtol=0)


def test_prompt_ensemble_by_hand(checkpoint, images):
    """Class embedding = normalise(mean_k normalise(text(template_k(label)))), computed here step by step."""
    model, processor = AlignModel.from_pretrained(checkpoint), AlignProcessor.from_pretrained(checkpoint)
    classifier = pipeline("zero-shot-image-classification", model=model, processor=processor)
    templates = ["a photo of a {}.", "a drawing of a {}.", "{}"]
    labels = ["dog", "cat"]
    by_hand = []
    for label in labels:
        vectors = []
        for t in templates:
            batch = processor(text=[t.format(label)], padding="longest")
            feature = model.get_text_features(batch["input_ids"], batch["attention_mask"])[0]
            vectors.append(feature / np.linalg.norm(feature))
        mean = np.mean(vectors, axis=0)
        by_hand.append(mean / np.linalg.norm(mean))
    assert_close(classifier.label_embeddings(labels, templates), np.stack(by_hand), atol=1e-6, rtol=0)

    pixels = processor(images=[images[0]])["pixel_values"]
    image = l2_normalize(model.get_image_features(pixels))[0]
    logits = np.stack(by_hand) @ image / model.temperature
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    result = {r["label"]: r["score"] for r in classifier(images[0], labels, hypothesis_template=templates)}
    assert_close([result[label] for label in labels], expected, atol=1e-6, rtol=0)


def test_label_embeddings_are_cached(checkpoint, images, monkeypatch):
    classifier = pipeline("zero-shot-image-classification", model=checkpoint)
    calls = []
    original = classifier.model.get_text_features
    monkeypatch.setattr(classifier.model, "get_text_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    for path in images:
        classifier(path, candidate_labels=LABELS)
    assert len(calls) == 1  # one text pass for three images
    classifier(images[0], candidate_labels=LABELS, hypothesis_template="{}!")
    assert len(calls) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(candidate_labels=[]), "at least one candidate label"),
        (dict(candidate_labels=["dog", ""]), r"candidate_labels\[1\] = '' must be a non-empty string"),
        (dict(candidate_labels=["dog", "dog"]), "duplicates"),
        (dict(candidate_labels=["dog"], hypothesis_template="a photo"), "must be a string containing '{}'"),
        (dict(candidate_labels=["dog"], hypothesis_template=[]), "empty list"),
    ],
)
def test_bad_arguments(checkpoint, images, kwargs, message):
    classifier = pipeline("zero-shot-image-classification", model=checkpoint)
    with pytest.raises(ValueError, match=message):
        classifier(images[0], **kwargs)


def test_unknown_task_and_missing_default_model():
    with pytest.raises(ValueError, match="unknown task 'image-classification'"):
        pipeline("image-classification")


def test_minialign_pipeline_is_the_function_whatever_was_imported_first():
    """`import minialign` is lazy: the function must win over a submodule of the same name."""
    import subprocess
    import sys

    code = ("import minialign.pipelines, minialign.cli\n"
            "from minialign import pipeline, ZeroShotImageClassificationPipeline\n"
            "import minialign\n"
            "assert callable(pipeline) and minialign.pipeline is pipeline, pipeline\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
