"""The Triton backend end to end, against the NumPy backend, on a tiny ALIGN.

CI has no GPU: under TRITON_INTERPRET=1 (set by conftest.py) the kernels run on the CPU in float32,
so this checks the whole wiring -- weight conversion, layouts, every op's arguments, the fused
epilogues -- on the same architecture code as the NumPy backend. The tiny config keeps the
interpreter fast: head_dim 16 (the attention kernel's smallest), a 33x33 image.
"""

import json

import numpy as np
import pytest

from helpers import TOLERANCES, assert_close
from minialign import AlignModel, AlignProcessor, pipeline
from minialign.backends import get_ops
from reference import align_checkpoint

pytest.importorskip("triton", reason="the triton backend needs the triton package (the dev extra installs it)")

# Two float32 implementations of the same model: the kernels sum in other orders (tiles, fused
# epilogues), so results differ by rounding, compounded over the layers; 1e-4 is the model-level
# float32 tolerance used against transformers.
TOL = TOLERANCES["float32_model"]
TEXT = dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=48)
VISION = dict(width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=64)
IMAGE_SIZE = 33


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-align")
    align_checkpoint(directory, seed=3, temperature=0.1, text=TEXT, vision=VISION, projection_dim=80)
    # A small image size for the interpreter (align-base's processor crops 289x289).
    path = directory / "preprocessor_config.json"
    config = json.loads(path.read_text())
    config.update(size={"height": IMAGE_SIZE + 4, "width": IMAGE_SIZE + 4},
                  crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    path.write_text(json.dumps(config))
    numpy_model = AlignModel.from_pretrained(directory)
    triton_model = AlignModel.from_pretrained(directory, backend="triton")
    return directory, numpy_model, triton_model


def _inputs(model_dir):
    processor = AlignProcessor.from_pretrained(model_dir)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (50, 45, 3), dtype=np.uint8) for _ in range(2)]
    texts = ["a red car", "a photo of a small white dog on the beach"]  # different lengths: padding
    return processor(text=texts, images=images, padding="longest")


def test_triton_backend_matches_numpy_backend(models):
    directory, numpy_model, triton_model = models
    inputs = _inputs(directory)
    assert inputs["attention_mask"].min() == 0  # the short text is padded: the mask matters
    expected = numpy_model(inputs["input_ids"], inputs["pixel_values"], inputs["attention_mask"], return_loss=True)
    got = triton_model(inputs["input_ids"], inputs["pixel_values"], inputs["attention_mask"], return_loss=True)
    assert_close(got.text_embeds, expected.text_embeds, **TOL, name="text_embeds")
    assert_close(got.image_embeds, expected.image_embeds, **TOL, name="image_embeds")
    # logits are cosines / temperature (0.1): 10x the embeddings' error.
    assert_close(got.logits_per_text, expected.logits_per_text, atol=1e-3, rtol=0, name="logits_per_text")
    assert_close(got.loss, expected.loss, atol=1e-4, rtol=0, name="loss")
    assert_close(triton_model.get_text_features(inputs["input_ids"], inputs["attention_mask"]),
                 numpy_model.get_text_features(inputs["input_ids"], inputs["attention_mask"]), **TOL,
                 name="get_text_features")
    # The tower outputs stay on the backend (torch tensors); the block outputs match one by one.
    vision = triton_model.vision_model(inputs["pixel_values"], output_hidden_states=True)
    reference = numpy_model.vision_model(inputs["pixel_values"], output_hidden_states=True)
    assert len(vision.hidden_states) == len(reference.hidden_states)
    for i, (a, b) in enumerate(zip(vision.hidden_states, reference.hidden_states)):
        assert_close(a, b, **TOL, name=f"vision hidden_states[{i}]")


def test_triton_backend_pipeline_scores_match(models):
    directory, numpy_model, triton_model = models
    processor = AlignProcessor.from_pretrained(directory)
    image = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    labels = ["car", "dog", "tree"]
    expected = pipeline("zero-shot-image-classification", model=numpy_model, processor=processor)(image, labels)
    got = pipeline("zero-shot-image-classification", model=triton_model, processor=processor)(image, labels)
    assert [r["label"] for r in got] == [r["label"] for r in expected] or max(r["score"] for r in got) < 0.5
    scores = {r["label"]: r["score"] for r in got}
    assert_close([scores[r["label"]] for r in expected], [r["score"] for r in expected], atol=1e-4, rtol=0,
                 name="pipeline scores")


def test_triton_backend_refuses_what_it_cannot_do(models):
    directory, _, triton_model = models
    inputs = _inputs(directory)
    with pytest.raises(ValueError, match="never stores the attention probabilities"):
        triton_model.text_model(inputs["input_ids"], inputs["attention_mask"], output_attentions=True)
    with pytest.raises(ValueError, match="float32 only"):
        get_ops("triton", dtype="bfloat16")


def test_backend_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of \\('numpy', 'reference', 'triton'\\), got 'cuda'"):
        AlignModel.from_pretrained(tmp_path, backend="cuda")
    with pytest.raises(ValueError, match="dtype must be one of"):
        get_ops("numpy", dtype="float16")
    for backend in ("numpy", "reference"):  # both NumPy backends: float32 on the CPU, nothing else
        with pytest.raises(ValueError, match=f"the {backend} backend computes in float32 on the CPU"):
            get_ops(backend, dtype="bfloat16")
        with pytest.raises(ValueError, match=f"the {backend} backend computes in float32 on the CPU"):
            get_ops(backend, device="cuda")


def test_cli_classify_on_the_triton_backend(models, tmp_path, capsys):
    from PIL import Image

    from minialign.cli import main

    directory, numpy_model, _ = models
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(image)
    runs = {}
    for backend in ("numpy", "triton"):
        assert main(["classify", str(image), "--labels", "car", "dog", "--model", str(directory),
                     "--backend", backend, "--json"]) == 0
        runs[backend] = {r["label"]: r["score"] for r in json.loads(capsys.readouterr().out)[0]["results"]}
    assert_close([runs["triton"][k] for k in ("car", "dog")], [runs["numpy"][k] for k in ("car", "dog")],
                 atol=1e-4, rtol=0, name="CLI scores")
    # argparse's error for a bad choice, as one line like every other error
    assert main(["classify", str(image), "--labels", "car", "--model", str(directory), "--backend", "jax"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'jax'" in err


def test_pixel_values_may_be_a_torch_tensor(models):
    """Images already in a tensor (on the GPU, in real use) go in without a trip through NumPy."""
    import torch

    directory, numpy_model, triton_model = models
    pixel_values = _inputs(directory)["pixel_values"]
    from_tensor = triton_model.get_image_features(torch.from_numpy(pixel_values))
    assert_close(from_tensor, numpy_model.get_image_features(pixel_values), **TOL, name="image features")
    with pytest.raises(ValueError, match="pixel_values must be floating point"):
        triton_model.get_image_features(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.int64))
