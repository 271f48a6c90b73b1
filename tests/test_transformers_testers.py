"""The small models transformers' own ALIGN tests build, run by minialign and by transformers.

transformers tests ALIGN (tests/models/align/test_modeling_align.py) on three testers' configs:
a 3-stage EfficientNet fed 32x32 images with ``hidden_act="gelu"`` (not ALIGN's swish), a
2-layer BERT with 16 token types fed random attention masks that are not right-padded, and the
joint model of the two with ``projection_dim=64``. The values below are the testers' own; the
weights are random and non-trivial (``reference.randomize_``: random batchnorm statistics and
affine parameters, not transformers' init), and the inputs are drawn as the testers draw them.

Each test builds the configuration as the testers do (keywords, ``is_decoder=False`` included),
loads the weights transformers saved, and checks what the testers assert (shapes, the number of
hidden states, the config read back from a joint directory) plus the numbers: embeddings within
1e-5 and hidden states within 1e-4 of transformers' (helpers.TOLERANCES), on the numpy and
reference backends, and on the Triton backend under the interpreter (the vision tower, on 2 of the 12 images for time; its attention kernel needs a head size of at
least 16, and the text tester's is 8, which the backend refuses by name).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

import reference
from helpers import TOLERANCES, assert_close
from minialign import (AlignConfig, AlignModel, AlignTextConfig, AlignTextModel, AlignVisionConfig,
                       AlignVisionModel)

EMBEDDINGS = dict(atol=1e-5, rtol=0.0)  # float32, a few layers deep: measured ~1e-6
HIDDEN = TOLERANCES["float32_model"]  # atol 1e-4: every hidden state of both towers
CPU_BACKENDS = ["numpy", "reference"]
_HAS_TRITON = importlib.util.find_spec("triton") is not None
ALL_BACKENDS = [*CPU_BACKENDS, pytest.param("triton", marks=pytest.mark.skipif(
    not _HAS_TRITON, reason="the triton backend needs the triton package (the dev extra installs it)"))]

# AlignVisionModelTester's arguments (image_size is the input's, not a config field: the config
# keeps its default 600, as in the tester).
VISION_BATCH, IMAGE_SIZE = 12, 32
VISION_TESTER = dict(num_channels=3, kernel_sizes=[3, 3, 5], in_channels=[32, 16, 24], out_channels=[16, 24, 30],
                     hidden_dim=64, strides=[1, 1, 2], num_block_repeats=[1, 1, 2], expand_ratios=[1, 6, 6],
                     hidden_act="gelu")
# AlignTextModelTester's arguments.
TEXT_BATCH, SEQ_LENGTH = 12, 7
TEXT_TESTER = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                   hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                   max_position_embeddings=512, type_vocab_size=16, is_decoder=False, initializer_range=0.02)
PROJECTION_DIM = 64  # AlignModelTester
TRITON_IMAGES = 2  # of the tester's 12 images, on the Triton interpreter (see test_vision_tester)


def _hf_configs():
    from transformers import AlignConfig as HFAlign
    from transformers import AlignTextConfig as HFText
    from transformers import AlignVisionConfig as HFVision

    text, vision = HFText(**TEXT_TESTER), HFVision(**VISION_TESTER)
    return text, vision, HFAlign(text_config=text, vision_config=vision, projection_dim=PROJECTION_DIM)


def _inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """The testers' inputs: floats_tensor pixels in [0, 1), ids_tensor ids and token types, and
    random_attention_mask (random 0/1 with the last token kept), so masks have holes anywhere."""
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 2, (TEXT_BATCH, SEQ_LENGTH))
    mask[:, -1] = 1
    assert not all((np.diff(row) <= 0).all() for row in mask)  # some mask is not right-padded
    return dict(input_ids=rng.integers(0, TEXT_TESTER["vocab_size"], (TEXT_BATCH, SEQ_LENGTH)),
                token_type_ids=rng.integers(0, TEXT_TESTER["type_vocab_size"], (TEXT_BATCH, SEQ_LENGTH)),
                attention_mask=mask,
                pixel_values=rng.uniform(0, 1, (VISION_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32))


def _torch(batch: dict[str, np.ndarray], *names: str) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(batch[name]) for name in names}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """transformers' three tester models with random non-trivial weights, each saved by
    save_pretrained, and their outputs on the testers' inputs (hidden states and attentions too)."""
    from transformers import AlignModel as HFAlign
    from transformers import AlignTextModel as HFText
    from transformers import AlignVisionModel as HFVision

    text_config, vision_config, joint_config = _hf_configs()
    batch = _inputs()
    models = {"text": reference.randomize_(HFText(text_config), seed=1),
              "vision": reference.randomize_(HFVision(vision_config), seed=2),
              "joint": reference.randomize_(HFAlign(joint_config), seed=3)}
    models["text"].config._attn_implementation = "eager"  # returns the attention probabilities
    models["joint"].text_model.config._attn_implementation = "eager"
    with torch.no_grad():
        models["joint"].temperature.fill_(0.5)  # not 1.0: a temperature bug would show
        text_inputs = _torch(batch, "input_ids", "attention_mask", "token_type_ids")
        outputs = {"text": models["text"](**text_inputs, output_hidden_states=True, output_attentions=True),
                   "vision": models["vision"](torch.from_numpy(batch["pixel_values"]), output_hidden_states=True),
                   "joint": models["joint"](**text_inputs, pixel_values=torch.from_numpy(batch["pixel_values"]),
                                            return_loss=True, output_hidden_states=True)}
    directories = {}
    for name, model in models.items():
        directories[name] = tmp_path_factory.mktemp(name)
        model.save_pretrained(directories[name])
    return directories, outputs, batch


# -- configs: the testers' keywords, the testers' own config checks ------------------------------------


def test_the_testers_configs_build_here_with_the_same_values():
    """Every field minialign has equals transformers' for the testers' keyword arguments, and the
    keyword transformers keeps without a field (is_decoder) is kept the same way, in extra."""
    hf_text, hf_vision, hf_joint = _hf_configs()
    ours = {"text": AlignTextConfig(**TEXT_TESTER), "vision": AlignVisionConfig(**VISION_TESTER)}
    ours["joint"] = AlignConfig(text_config=ours["text"], vision_config=ours["vision"], projection_dim=PROJECTION_DIM)
    assert ours["text"].extra == {"is_decoder": False}
    for name, theirs in (("text", hf_text), ("vision", hf_vision), ("joint", hf_joint)):
        mine, their_dict = ours[name].to_dict(), theirs.to_dict()
        for key in ("text_config", "vision_config"):
            mine.pop(key, None), their_dict.pop(key, None)
        for key, value in mine.items():
            assert their_dict[key] == value, (name, key, their_dict[key], value)
    assert ours["vision"].num_hidden_layers == hf_vision.num_hidden_layers == 15  # ceil(3.1 * [1, 1, 2])


@pytest.mark.parametrize("part", ["text_config", "vision_config"])
def test_load_a_tower_config_from_a_joint_config_json(tmp_path, part):
    """transformers' test_load_vision_text_config: a joint config.json read as one tower's config
    gives that part, equal to the joint config's own and to what transformers reads."""
    import transformers

    _, _, hf_joint = _hf_configs()
    hf_joint.save_pretrained(tmp_path)
    ours = {"text_config": AlignTextConfig, "vision_config": AlignVisionConfig}[part].from_pretrained(tmp_path)
    assert ours == getattr(AlignConfig.from_pretrained(tmp_path), part)
    theirs = getattr(transformers, type(ours).__name__).from_pretrained(tmp_path).to_dict()
    for key, value in ours.to_dict().items():
        assert theirs[key] == value, (key, theirs[key], value)
    assert ours.to_dict()["model_type"] == theirs["model_type"]


def test_a_joint_config_json_with_a_bad_tower_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "align", "vision_config": {"hidden_act": "prelu"}}))
    with pytest.raises(ValueError, match=r"config.json: AlignVisionConfig.hidden_act 'prelu' has learned weights"):
        AlignVisionConfig.from_pretrained(tmp_path)


# -- the vision tester -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_vision_tester(checkpoints, backend):
    directories, outputs, batch = checkpoints
    # The interpreter runs the kernels program by program in NumPy: the tester's 12 images take
    # 16 minutes on the project's 2 shared cores, 2 of them a sixth of that. The rest: all 12.
    n = TRITON_IMAGES if backend == "triton" else VISION_BATCH
    ref = outputs["vision"]
    model = AlignVisionModel.from_pretrained(directories["vision"], backend=backend)
    out = model(batch["pixel_values"][:n], output_hidden_states=True)
    to_numpy = model.ops.to_numpy
    # the tester's shape checks: 32 -> 16 (stem) -> 8 (the stride-2 stage); 30 channels x 2.0 -> 64
    patch = IMAGE_SIZE // 4
    assert tuple(out.last_hidden_state.shape) == (n, VISION_TESTER["hidden_dim"], patch, patch)
    assert tuple(out.pooler_output.shape) == (n, VISION_TESTER["hidden_dim"])
    assert len(out.hidden_states) == sum(VISION_TESTER["num_block_repeats"]) * 4 == len(ref.hidden_states)
    assert list(out.hidden_states[0].shape[-2:]) == [IMAGE_SIZE // 2] * 2
    for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states, strict=True)):
        assert_close(to_numpy(a), b[:n], **HIDDEN, name=f"{backend}: hidden_states[{i}]")
    assert_close(to_numpy(out.last_hidden_state), ref.last_hidden_state[:n], **HIDDEN,
                 name=f"{backend}: last_hidden_state")
    assert_close(to_numpy(out.pooler_output), ref.pooler_output[:n], **EMBEDDINGS, name=f"{backend}: pooler_output")


def test_vision_tester_hidden_states_through_the_config(checkpoints):
    """The tester's second pass: config.output_hidden_states = True, no flag in the call."""
    directories, _, batch = checkpoints
    model = AlignVisionModel.from_pretrained(directories["vision"])
    assert model(batch["pixel_values"][:2]).hidden_states is None
    model.config.output_hidden_states = True
    assert len(model(batch["pixel_values"][:2]).hidden_states) == 16


# -- the text tester ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_text_tester(checkpoints, backend):
    directories, outputs, batch = checkpoints
    ref = outputs["text"]
    model = AlignTextModel.from_pretrained(directories["text"], backend=backend)
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    # the tester's three calls: mask and token types, token types alone, ids alone
    for out in (model(ids, mask, types), model(ids, token_type_ids=types), model(ids)):
        assert out.last_hidden_state.shape == (TEXT_BATCH, SEQ_LENGTH, TEXT_TESTER["hidden_size"])
        assert out.pooler_output.shape == (TEXT_BATCH, TEXT_TESTER["hidden_size"])
    out = model(ids, mask, types, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == TEXT_TESTER["num_hidden_layers"] + 1 == len(ref.hidden_states)
    assert len(out.attentions) == TEXT_TESTER["num_hidden_layers"] == len(ref.attentions)
    for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states, strict=True)):
        assert_close(a, b, **HIDDEN, name=f"{backend}: hidden_states[{i}]")
    for i, (a, b) in enumerate(zip(out.attentions, ref.attentions, strict=True)):
        assert a.shape == (TEXT_BATCH, TEXT_TESTER["num_attention_heads"], SEQ_LENGTH, SEQ_LENGTH)
        assert_close(a, b, **HIDDEN, name=f"{backend}: attentions[{i}]")
    assert_close(out.pooler_output, ref.pooler_output, **EMBEDDINGS, name=f"{backend}: pooler_output")
    model.config.output_attentions = True  # and through the config, as transformers' tests set it
    assert len(model(ids).attentions) == 2


def test_text_tester_on_triton_is_refused_by_name(checkpoints):
    """The text tester's head size is 32 / 4 = 8; the Triton attention kernel takes 16 and up."""
    pytest.importorskip("triton", reason="the triton backend needs the triton package")
    from minialign.kernels._checks import KernelInputError

    directories, _, batch = checkpoints
    model = AlignTextModel.from_pretrained(directories["text"], backend="triton")
    with pytest.raises(KernelInputError, match=r"head dim D=8 is unsupported: it must be one of \(16, 32, 64, 128\)"):
        model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])


# -- the joint tester --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_joint_tester(checkpoints, backend):
    directories, outputs, batch = checkpoints
    ref = outputs["joint"]
    model = AlignModel.from_pretrained(directories["joint"], backend=backend)
    out = model(batch["input_ids"], batch["pixel_values"], batch["attention_mask"], batch["token_type_ids"],
                return_loss=True, output_hidden_states=True)
    assert out.logits_per_image.shape == (VISION_BATCH, TEXT_BATCH)
    assert out.logits_per_text.shape == (TEXT_BATCH, VISION_BATCH)
    assert_close(out.text_embeds, ref.text_embeds, **EMBEDDINGS, name=f"{backend}: text_embeds")
    assert_close(out.image_embeds, ref.image_embeds, **EMBEDDINGS, name=f"{backend}: image_embeds")
    # logits = embeddings' cosines / 0.5: the embeddings' error, doubled
    assert_close(out.logits_per_text, ref.logits_per_text, atol=1e-4, rtol=0, name=f"{backend}: logits_per_text")
    assert out.loss == pytest.approx(float(ref.loss), abs=1e-5)
    for tower in ("text_model_output", "vision_model_output"):
        ours, theirs = getattr(out, tower).hidden_states, getattr(ref, tower).hidden_states
        assert len(ours) == len(theirs)
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_close(a, b, **HIDDEN, name=f"{backend}: {tower}.hidden_states[{i}]")


@pytest.mark.parametrize("tower, cls", [("text_model", AlignTextModel), ("vision_model", AlignVisionModel)])
def test_a_tower_loads_from_the_joint_checkpoint(checkpoints, tower, cls):
    """from_pretrained on a joint directory: that tower's config part and weights, the same
    outputs as the joint model's tower."""
    directories, outputs, batch = checkpoints
    model = cls.from_pretrained(directories["joint"])
    ref = getattr(outputs["joint"], f"{tower}_output")
    if cls is AlignTextModel:
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    else:
        out = model(batch["pixel_values"])
    assert_close(out.last_hidden_state, ref.last_hidden_state, **HIDDEN, name=f"{tower}: last_hidden_state")
    assert_close(out.pooler_output, ref.pooler_output, **EMBEDDINGS, name=f"{tower}: pooler_output")
