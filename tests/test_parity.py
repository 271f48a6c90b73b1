"""The layer-by-layer parity report: it passes on a faithful checkpoint and points at the layer
where a deliberately perturbed weight first changes the output.

The perturbation is applied to minialign's copy of the checkpoint only; transformers reads the
original, so the report compares a broken minialign with a correct reference -- the situation
the report exists for.
"""

import json
import math
import shutil
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import reference
from minialign.parity import (
    MissingReferenceError, Tolerance, compare_arrays, compare_models, format_report, parity_report,
)

# Small but deep enough to have a "before" and an "after" the perturbed layer on both towers:
# 3 BERT layers; width 0.1 / depth 0.2 gives 7 MBConv blocks with widths 8..32.
TEXT_LAYERS = 3
VISION_BLOCKS = 7
EXPECTED_ROWS = (
    ["text.embeddings"] + [f"text.layer.{i}" for i in range(TEXT_LAYERS)] + ["text.pooler", "text.projection"]
    + ["vision.stem"] + [f"vision.block.{i}" for i in range(VISION_BLOCKS)] + ["vision.pooled"]
    + ["text_embeds", "image_embeds", "logits_per_text", "loss"]
)
SMALL_TEXT = dict(hidden_size=16, num_hidden_layers=TEXT_LAYERS, num_attention_heads=2, intermediate_size=24)
SMALL_VISION = dict(width_coefficient=0.1, depth_coefficient=0.2, hidden_dim=32)


def _perturbed_copy(src, dst, name, change):
    """Copy the checkpoint directory and apply ``change`` to one tensor of its weights."""
    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    state[name] = change(state[name]).astype(state[name].dtype)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    reference.align_checkpoint(root / "good", seed=5, projection_dim=32, temperature=0.07,
                               text=SMALL_TEXT, vision=SMALL_VISION)
    noise = np.random.default_rng(0)
    return {
        "good": root / "good",
        # A second-layer FFN weight off by ~10% of its scale: layer 0 is untouched, layer 1 is not.
        "text": _perturbed_copy(root / "good", root / "text", "text_model.encoder.layer.1.output.dense.weight",
                                lambda w: w + 0.1 * w.std() * noise.standard_normal(w.shape)),
        # A batchnorm variance 1.5x too large in block 3: the stem and blocks 0-2 are untouched.
        "vision": _perturbed_copy(root / "good", root / "vision",
                                  "vision_model.encoder.blocks.3.depthwise_conv.depthwise_norm.running_var",
                                  lambda v: v * 1.5),
    }


# -- one row, by hand --------------------------------------------------------------------------


def test_compare_arrays_hand_case():
    # |a - b| = (0, 0.5, 0.25); max|b| = 4, so max_rel = 0.5 / 4 (normwise, not 0.5 / 2).
    row = compare_arrays("x", [1.0, 2.5, -3.75], [1.0, 2.0, -4.0], Tolerance(atol=0.1, rtol=0.1))
    assert (row.max_abs, row.max_rel) == (0.5, 0.125)
    assert row.allowed == pytest.approx(0.1 + 0.1 * 4) and row.ok  # 0.5 <= 0.5
    assert not compare_arrays("x", [1.0, 2.6], [1.0, 2.0], Tolerance(atol=0.1, rtol=0.1)).ok  # 0.6 > 0.3
    # NaN against NaN is a match; NaN against a number is an infinite error; shapes must agree.
    assert compare_arrays("x", [np.nan, 1.0], [np.nan, 1.0], Tolerance(0, 0)).ok
    assert compare_arrays("x", [np.nan, 1.0], [0.0, 1.0], Tolerance(1, 1)).max_abs == math.inf
    mismatch = compare_arrays("x", np.zeros((2, 3)), np.zeros((2, 4)), Tolerance(1, 1))
    assert not mismatch.ok and "shape (2, 3) in minialign, (2, 4) in transformers" in mismatch.note
    # All-zero reference: no division by zero.
    assert compare_arrays("x", [0.0], [0.0], Tolerance(0, 0)).max_rel == 0.0


# -- whole models ------------------------------------------------------------------------------


def test_faithful_checkpoint_is_within_tolerance(checkpoints):
    report = parity_report(checkpoints["good"])
    assert [row.name for row in report.rows] == EXPECTED_ROWS
    assert report.ok and report.first_failure is None, format_report(report)
    assert report.row("text.layer.0").shape == (3, 64, 16)  # 3 default captions padded to 64
    assert report.row("vision.stem").shape == (3, 8, 144, 144)  # NCHW, like transformers
    assert report.row("loss").shape == ()
    text = format_report(report)
    assert text.splitlines()[-1] == f"all {len(EXPECTED_ROWS)} layers within tolerance"
    assert "first divergence" not in text and " over" not in text
    data = json.loads(json.dumps(report.to_json()))
    assert data["ok"] is True and data["first_failure"] is None
    assert [r["name"] for r in data["rows"]] == EXPECTED_ROWS


def test_perturbed_text_weight_is_reported_at_its_layer(checkpoints):
    report = parity_report(checkpoints["text"], reference_dir=checkpoints["good"])
    assert not report.ok
    assert report.first_failure.name == "text.layer.1"
    assert report.row("text.embeddings").ok and report.row("text.layer.0").ok
    assert not report.row("text.layer.2").ok  # the error propagates
    assert all(row.ok for row in report.rows if row.name.startswith("vision."))  # the image tower is intact
    assert not report.row("logits_per_text").ok
    _assert_marked(format_report(report), "text.layer.1")
    assert json.loads(json.dumps(report.to_json()))["first_failure"] == "text.layer.1"


def test_perturbed_vision_buffer_is_reported_at_its_block(checkpoints):
    report = parity_report(checkpoints["vision"], reference_dir=checkpoints["good"])
    assert report.first_failure.name == "vision.block.3"
    assert all(report.row(name).ok for name in ("vision.stem", "vision.block.0", "vision.block.1", "vision.block.2"))
    assert all(row.ok for row in report.rows if row.name.startswith("text"))
    assert not report.row("vision.block.4").ok
    # Later blocks damp the error (here to ~1e-4 by image_embeds, near its tolerance): an
    # end-to-end check alone could miss this bug, which is why the report compares every block.
    _assert_marked(format_report(report), "vision.block.3")


def _assert_marked(text, name):
    lines = text.splitlines()
    marked = [line for line in lines if "<-- first divergence" in line]
    assert len(marked) == 1 and marked[0].split()[0] == name, text
    later = lines[lines.index(marked[0]) + 1:-1]
    assert any(line.split()[-1] == "over" for line in later), text  # later failures say "over"
    assert lines[-1].startswith(f"first divergence at {name}: max abs ")


def test_loaded_models_unequal_batch_and_overridden_tolerance(checkpoints):
    """compare_models takes already-loaded models; with 2 texts and 1 image there is no loss row;
    an absurdly tight tolerance fails the first row."""
    import torch
    import transformers

    from minialign import AlignModel, AlignProcessor
    from minialign.parity import make_batch

    directory = checkpoints["good"]
    ours = AlignModel.from_pretrained(directory)
    theirs = transformers.AlignModel.from_pretrained(directory, attn_implementation="eager", dtype=torch.float32)
    batch = make_batch(AlignProcessor.from_pretrained(directory), texts=["a dog", "a red car"],
                       images=[np.zeros((40, 60, 3), np.uint8)])
    report = compare_models(ours, theirs, batch)
    assert report.ok and report.rows[-1].name == "logits_per_text" and report.rows[-1].shape == (2, 1)
    strict = compare_models(ours, theirs, batch, atol=0.0, rtol=0.0)
    assert all(row.atol == 0.0 and row.rtol == 0.0 for row in strict.rows)
    assert strict.first_failure is not None  # float32 rounding differs somewhere


def test_missing_torch_or_transformers_is_a_clear_error(checkpoints, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` raise ImportError
    with pytest.raises(MissingReferenceError, match=r"needs torch and transformers .*pip install 'minialign\[dev\]'"):
        parity_report(checkpoints["good"])
    assert issubclass(MissingReferenceError, ImportError)
