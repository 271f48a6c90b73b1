"""AlignModel and AlignProcessor end to end against transformers, and the contrastive loss."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import reference
from helpers import TOLERANCES, assert_close, max_abs_error
from minialign import AlignModel, AlignProcessor, CheckpointError
from minialign.loss import align_loss, cross_entropy, l2_normalize

F32 = TOLERANCES["float32"]
CAPTIONS = ["a photo of a dog", "a red car near the beach", "a small bird sitting on a tree", "this is a cat",
            "a child with a ball in the park", "a large white house"]


def _reference_outputs(hf, batch, return_loss=True):
    with torch.no_grad():
        return hf(**{k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}, return_loss=return_loss)


# -- the loss ----------------------------------------------------------------------------------


def test_cross_entropy_hand_case():
    # Two classes with equal logits: p = 1/2 each, loss = log 2 whatever the smoothing.
    assert cross_entropy(np.zeros((1, 2), np.float32), np.array([0]), 0.1) == pytest.approx(np.log(2), abs=1e-7)
    # Logits (0, log 3): p = (1/4, 3/4). Target 1, eps 0.1: 0.9 * -log(3/4) + 0.1 * mean(-log p).
    logits = np.array([[0.0, np.log(3.0)]], np.float32)
    expected = 0.9 * -np.log(0.75) + 0.1 * -(np.log(0.25) + np.log(0.75)) / 2
    assert cross_entropy(logits, np.array([1]), 0.1) == pytest.approx(expected, abs=1e-6)


@given(n=st.integers(1, 9), scale=st.sampled_from([1.0, 14.3, 100.0]), seed=st.integers(0, 2**31))
def test_align_loss_matches_transformers(n, scale, seed):
    from transformers.models.align.modeling_align import align_loss as hf_align_loss

    logits = (np.random.default_rng(seed).standard_normal((n, n)) * scale).astype(np.float32)
    assert align_loss(logits) == pytest.approx(float(hf_align_loss(torch.from_numpy(logits))), abs=1e-5, rel=1e-6)
    ce = F.cross_entropy(torch.from_numpy(logits), torch.arange(n), label_smoothing=0.1)
    assert cross_entropy(logits, np.arange(n), 0.1) == pytest.approx(float(ce), abs=1e-5, rel=1e-6)


def test_l2_normalize():
    assert_close(l2_normalize(np.array([[3.0, 4.0]], np.float32)), [[0.6, 0.8]], atol=1e-7, rtol=0)


# -- the whole model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def align_base(tmp_path_factory):
    """The full align-base architecture with random non-trivial weights and temperature 0.07."""
    directory = tmp_path_factory.mktemp("align-base")
    hf = reference.align_checkpoint(directory, seed=21, temperature=0.07)
    return directory, hf


def test_end_to_end_on_full_align_base(align_base):
    directory, hf = align_base
    ours = AlignModel.from_pretrained(directory)
    assert ours.temperature == pytest.approx(0.07)
    processor = AlignProcessor.from_pretrained(directory)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(300, 400), (289, 289), (500, 320), (64, 90)]]
    batch = processor(text=CAPTIONS[:4], images=images)
    assert batch["input_ids"].shape == (4, 64) and batch["pixel_values"].shape == (4, 3, 289, 289)
    out = ours(batch["input_ids"], batch["pixel_values"], batch["attention_mask"], batch["token_type_ids"],
               return_loss=True)
    ref = _reference_outputs(hf, batch)
    for name, tol in [("text_embeds", 1e-5), ("image_embeds", 1e-5), ("logits_per_text", 1e-3),
                      ("logits_per_image", 1e-3)]:
        err = max_abs_error(getattr(out, name), getattr(ref, name))
        assert err <= tol, f"{name}: max abs error {err:.2e} > {tol}"
    assert abs(out.loss - float(ref.loss)) <= 1e-5, (out.loss, float(ref.loss))
    # unnormalised features, as the transformers docs use them
    text_features = ours.get_text_features(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    with torch.no_grad():
        ref_text = hf.get_text_features(input_ids=torch.from_numpy(batch["input_ids"]),
                                        attention_mask=torch.from_numpy(batch["attention_mask"]))
    ref_text = ref_text.pooler_output if hasattr(ref_text, "pooler_output") else ref_text
    assert_close(text_features, ref_text, **TOLERANCES["float32_model"], name="get_text_features")
    assert text_features.shape == (4, 640)


@given(
    layers=st.integers(1, 2), heads=st.sampled_from([1, 2]), width=st.sampled_from([0.1, 0.2]),
    temperature=st.sampled_from([1.0, 0.05]), n_text=st.integers(1, 3), n_image=st.integers(1, 3),
    seed=st.integers(0, 2**31),
)
def test_matches_transformers_on_small_configs(tmp_path_factory, layers, heads, width, temperature, n_text,
                                               n_image, seed):
    directory = tmp_path_factory.mktemp("small")
    hf = reference.align_checkpoint(
        directory, seed=seed % 1000, temperature=temperature, projection_dim=int(320 * width),  # = vision width
        text=dict(hidden_size=8 * heads, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=12),
        vision=dict(width_coefficient=width, depth_coefficient=0.2, hidden_dim=32),
    )
    ours = AlignModel.from_pretrained(directory)
    rng = np.random.default_rng(seed)
    batch = AlignProcessor.from_pretrained(directory)(
        text=[CAPTIONS[i] for i in rng.integers(0, len(CAPTIONS), n_text)],
        images=[rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(n_image)], padding="longest")
    out = ours(batch["input_ids"], batch["pixel_values"], batch["attention_mask"], return_loss=n_text == n_image)
    ref = _reference_outputs(hf, batch, return_loss=n_text == n_image)
    assert_close(out.text_embeds, ref.text_embeds, **F32, name="text_embeds")
    assert_close(out.image_embeds, ref.image_embeds, **F32, name="image_embeds")
    assert_close(out.logits_per_text, ref.logits_per_text, atol=1e-3, rtol=1e-5, name="logits_per_text")
    if n_text == n_image:
        assert out.loss == pytest.approx(float(ref.loss), abs=1e-5)


def test_save_pretrained_round_trip(tmp_path):
    from transformers import AlignModel as HFAlignModel

    hf = reference.align_checkpoint(tmp_path / "a", seed=4, projection_dim=32, temperature=0.3,
                                    text=dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=8),
                                    vision=dict(width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=16))
    AlignModel.from_pretrained(tmp_path / "a").save_pretrained(tmp_path / "b")
    back = HFAlignModel.from_pretrained(tmp_path / "b")
    for name, tensor in hf.state_dict().items():  # num_batches_tracked counters included
        assert torch.equal(back.state_dict()[name], tensor), name


def test_processor_matches_transformers(align_base):
    from transformers import AlignProcessor as HFAlignProcessor

    directory, _ = align_base
    ours = AlignProcessor.from_pretrained(directory)
    theirs = HFAlignProcessor.from_pretrained(directory)
    image = np.random.default_rng(1).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    a = ours(text=CAPTIONS[:3], images=[image])
    b = theirs(text=CAPTIONS[:3], images=[image], return_tensors="np")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert (a[key] == b[key]).all(), key
    assert_close(a["pixel_values"], b["pixel_values"], atol=1e-5, rtol=0, name="pixel_values")


def test_hub_id_resolves_through_the_local_cache(align_base, tmp_path, monkeypatch):
    directory, _ = align_base
    snapshot = tmp_path / "hub" / "models--kakaobrain--align-base" / "snapshots" / "abc123"
    snapshot.parent.mkdir(parents=True)
    os.symlink(directory, snapshot)
    (tmp_path / "hub" / "models--kakaobrain--align-base" / "refs").mkdir()
    (tmp_path / "hub" / "models--kakaobrain--align-base" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert AlignModel.from_pretrained("kakaobrain/align-base").temperature == pytest.approx(0.07)
    assert AlignProcessor.from_pretrained("kakaobrain/align-base").tokenizer.vocab_size > 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never touch the network in tests
    with pytest.raises(CheckpointError, match=r"'someone/missing' is neither a local directory nor in the Hugging "
                                              r"Face cache .*HF_HUB_OFFLINE is set.*`hf download someone/missing`"):
        AlignModel.from_pretrained("someone/missing")


def test_bad_inputs_are_clear_errors(align_base, tmp_path):
    directory, _ = align_base
    processor = AlignProcessor.from_pretrained(directory)
    with pytest.raises(ValueError, match="text is an empty string"):
        processor(text="  ")
    with pytest.raises(ValueError, match="text is an empty list"):
        processor(text=[])
    with pytest.raises(ValueError, match="needs text=..., images=..., or both"):
        processor()
    reference.align_checkpoint(tmp_path / "m", projection_dim=32,
                               text=dict(hidden_size=4, num_hidden_layers=1, num_attention_heads=1, intermediate_size=4),
                               vision=dict(width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=16))
    model = AlignModel.from_pretrained(tmp_path / "m")
    batch = AlignProcessor.from_pretrained(tmp_path / "m")(text=CAPTIONS[:2], images=[np.zeros((40, 40, 3), np.uint8)])
    with pytest.raises(ValueError, match="return_loss needs as many texts as images .* got 2 texts and 1 images"):
        model(batch["input_ids"], batch["pixel_values"], batch["attention_mask"], return_loss=True)
    os.remove(tmp_path / "m" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"no weights found \(looked for model.safetensors"):
        AlignModel.from_pretrained(tmp_path / "m")
    os.remove(tmp_path / "m" / "vocab.txt")
    with pytest.raises(FileNotFoundError, match="no vocab.txt"):
        AlignProcessor.from_pretrained(tmp_path / "m")


def test_projection_must_match_the_image_embedding_width(tmp_path):
    from minialign import AlignConfig, ConfigError

    config = AlignConfig(vision_config={"width_coefficient": 0.1, "depth_coefficient": 0.1}, projection_dim=16)
    with pytest.raises(ConfigError, match=r"projection_dim=16 .* image embedding has 32 channels"):
        AlignModel(config, {})


@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=9), bucket_size=st.integers(1, 4),
       seed=st.integers(0, 2**31))
def test_text_features_in_length_buckets_equal_the_padded_batch(tmp_path_factory, lengths, bucket_size, seed):
    """get_text_features runs sorted length buckets cut to their longest text; the padded batch
    through the text tower in one piece is the reference. Rows come back in the input order."""
    directory = tmp_path_factory.mktemp("bucket")
    reference.align_checkpoint(directory, seed=2, projection_dim=32,
                               text=dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=24),
                               vision=dict(width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=16))
    model = AlignModel.from_pretrained(directory)
    rng = np.random.default_rng(seed)
    T = max(lengths) + int(rng.integers(0, 4))  # extra padding columns too
    ids = rng.integers(1, model.config.text_config.vocab_size, (len(lengths), T))
    mask = (np.arange(T) < np.array(lengths)[:, None]).astype(np.int64)
    padded = model._project_text(model.text_model(ids, mask))
    assert_close(model.get_text_features(ids, mask, bucket_size=bucket_size), padded, **TOLERANCES["float32"],
                 name="bucketed text features")
    # A mask with a hole is not right-padded: it runs as one padded batch.
    if T > 2:
        holed = mask.copy()
        holed[0, :] = 1
        holed[0, 1] = 0
        assert_close(model.get_text_features(ids, holed, bucket_size=bucket_size),
                     model._project_text(model.text_model(ids, holed)), atol=0, rtol=0, name="holed mask")
