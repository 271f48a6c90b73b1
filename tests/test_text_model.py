"""The BERT text tower against transformers' AlignTextModel with the same (random, non-trivial) weights.

The model comparisons run on both NumPy backends: "numpy" (the default, fast) and "reference"
(the plain math), at the same tolerance; the Triton backend is checked in test_triton_backend.py.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import reference
from helpers import TOLERANCES, assert_close, max_abs_error
from minialign import AlignTextConfig, AlignTextModel, CheckpointError
from minialign.backends import reference as reference_ops

F32 = TOLERANCES["float32"]
CPU_BACKENDS = ("numpy", "reference")  # both must match transformers to the same tolerance


def _padded_batch(rng, batch, seq_len, vocab):
    """Random ids with [CLS]-like id 1 first and right padding (id 0) of random length per row."""
    ids = rng.integers(2, vocab, (batch, seq_len))
    lengths = rng.integers(1, seq_len + 1, batch)
    lengths[0] = seq_len  # at least one row without padding
    mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int64)
    ids[:, 0] = 1
    ids[mask == 0] = 0
    return ids, mask


def _from_reference(hf_model, tmp_path) -> AlignTextModel:
    hf_model.save_pretrained(tmp_path)
    return AlignTextModel.from_pretrained(tmp_path)


def _run_reference(hf_model, ids, mask, token_types=None):
    with torch.no_grad():
        return hf_model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            token_type_ids=None if token_types is None else torch.from_numpy(token_types),
            output_hidden_states=True,
            output_attentions=True,
        )


@given(
    layers=st.integers(1, 3),  # transformers returns no hidden_states at all for 0 layers
    heads=st.sampled_from([1, 2, 4]),
    head_dim=st.sampled_from([3, 8]),
    intermediate=st.sampled_from([5, 37]),
    act=st.sampled_from(AlignTextConfig.SUPPORTED_ACTIVATIONS),
    eps=st.sampled_from([1e-12, 1e-5]),
    batch=st.integers(1, 4),
    seq_len=st.integers(1, 13),
    seed=st.integers(0, 2**31),
)
def test_matches_transformers_on_small_configs(tmp_path_factory, layers, heads, head_dim, intermediate, act, eps,
                                               batch, seq_len, seed):
    config = dict(vocab_size=97, hidden_size=heads * head_dim, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=intermediate, hidden_act=act, layer_norm_eps=eps, max_position_embeddings=16,
                  type_vocab_size=3)
    hf = reference.text_model(seed=seed % 1000, **config)
    directory = tmp_path_factory.mktemp("text")
    hf.save_pretrained(directory)
    rng = np.random.default_rng(seed)
    ids, mask = _padded_batch(rng, batch, seq_len, 97)
    token_types = rng.integers(0, 3, ids.shape)
    ref = _run_reference(hf, ids, mask, token_types)
    for backend in CPU_BACKENDS:
        ours = AlignTextModel.from_pretrained(directory, backend=backend)
        out = ours(ids, mask, token_types, output_hidden_states=True, output_attentions=True)
        assert len(out.hidden_states) == len(ref.hidden_states) == layers + 1
        for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states)):
            assert_close(a, b, **F32, name=f"{backend}: hidden_states[{i}]")
        for i, (a, b) in enumerate(zip(out.attentions, ref.attentions)):
            assert_close(a, b, **F32, name=f"{backend}: attentions[{i}]")
        assert_close(out.last_hidden_state, ref.last_hidden_state, **F32, name=f"{backend}: last_hidden_state")
        assert_close(out.pooler_output, ref.pooler_output, **F32, name=f"{backend}: pooler_output")


def test_encoder_layer_and_embeddings_one_by_one(tmp_path):
    """Each piece on its own against the matching transformers module (catches compensating bugs)."""
    hf = reference.text_model(seed=3, vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                              intermediate_size=40)
    ours = _from_reference(hf, tmp_path)
    rng = np.random.default_rng(0)
    ids, mask = _padded_batch(rng, 3, 9, 50)
    types = rng.integers(0, 2, ids.shape)
    with torch.no_grad():
        ref_emb = hf.embeddings(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(types))
    assert_close(ours.embeddings(ids, types), ref_emb, **F32, name="embeddings")

    x = rng.standard_normal((3, 9, 24)).astype(np.float32)
    bias = reference_ops.attention_bias(np.asarray(mask))  # transformers' layer takes the additive bias
    with torch.no_grad():
        ref_layer = hf.encoder.layer[1](torch.from_numpy(x), attention_mask=torch.from_numpy(bias))
    ref_layer = ref_layer[0] if isinstance(ref_layer, tuple) else ref_layer
    assert_close(ours.encoder_layer(1, x, mask)[0], ref_layer, **F32, name="encoder layer 1")
    with torch.no_grad():
        ref_pool = hf.pooler(torch.from_numpy(x))
    assert_close(ours.pooler(x), ref_pool, **F32, name="pooler")


def test_full_align_base_text_tower(tmp_path):
    """align-base's text config (12 layers, hidden 768, vocab 30522), padded batch of different
    lengths, on both NumPy backends."""
    hf = reference.text_model(seed=7)  # all defaults = align-base
    rng = np.random.default_rng(1)
    ids, mask = _padded_batch(rng, 4, 40, 30522)
    ref = _run_reference(hf, ids, mask)
    hf.save_pretrained(tmp_path)
    for backend in CPU_BACKENDS:
        ours = AlignTextModel.from_pretrained(tmp_path, backend=backend)
        assert ours.config == AlignTextConfig()  # the defaults are align-base's
        out = ours(ids, mask)
        err = max_abs_error(out.last_hidden_state, ref.last_hidden_state)
        assert err <= 1e-4, f"{backend}: last_hidden_state max abs error {err:.2e} > 1e-4"
        assert_close(out.last_hidden_state, ref.last_hidden_state, **TOLERANCES["float32_model"],
                     name=f"{backend}: last_hidden_state")
        assert_close(out.pooler_output, ref.pooler_output, **TOLERANCES["float32_model"],
                     name=f"{backend}: pooler_output")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_load(tmp_path, dtype):
    """A checkpoint saved in float16/bfloat16 gives the same outputs as the float32 model with
    those rounded weights (we widen exactly; only the arithmetic order differs)."""
    hf = reference.text_model(seed=5, vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=20)
    hf = hf.to(dtype).float()  # round the weights, compute in float32
    hf.to(dtype).save_pretrained(tmp_path)
    ours = AlignTextModel.from_pretrained(tmp_path)
    assert all(p.dtype == np.float32 for p in ours.params.values())
    ids, mask = _padded_batch(np.random.default_rng(2), 2, 6, 40)
    assert_close(ours(ids, mask).last_hidden_state, _run_reference(hf.float(), ids, mask).last_hidden_state, **F32)


def test_loads_plain_bert_and_full_align_checkpoints(tmp_path):
    from transformers import AlignConfig, AlignModel, BertConfig, BertModel

    bert = reference.randomize_(BertModel(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=24)), seed=1)
    bert.save_pretrained(tmp_path / "bert")
    ours = AlignTextModel.from_pretrained(tmp_path / "bert")
    ids, mask = _padded_batch(np.random.default_rng(3), 2, 5, 60)
    with torch.no_grad():
        ref = bert(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    assert_close(ours(ids, mask).last_hidden_state, ref, **F32, name="bert")

    config = AlignConfig(
        text_config=dict(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24),
        vision_config=dict(width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=32),
        projection_dim=8,
    )
    align = reference.randomize_(AlignModel(config), seed=2)
    align.save_pretrained(tmp_path / "align")
    ours = AlignTextModel.from_pretrained(tmp_path / "align")
    with torch.no_grad():
        ref = align.text_model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    assert_close(ours(ids, mask).last_hidden_state, ref, **F32, name="align text_model")


def test_save_pretrained_loads_in_transformers(tmp_path):
    from transformers import AlignTextModel as HFAlignTextModel

    hf = reference.text_model(seed=9, vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=12, hidden_act="gelu_new")
    ours = _from_reference(hf, tmp_path / "a")
    ours.save_pretrained(tmp_path / "b")
    back = HFAlignTextModel.from_pretrained(tmp_path / "b").eval()
    for name, tensor in hf.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    assert back.config.hidden_act == "gelu_new"


def test_checkpoint_that_does_not_fit_the_config_names_every_key(tmp_path):
    hf = reference.text_model(vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=12)
    hf.save_pretrained(tmp_path)
    config = AlignTextConfig.from_pretrained(tmp_path)
    config.vocab_size, config.num_hidden_layers = 31, 3
    state = {k: v.numpy() for k, v in hf.state_dict().items()}
    state["surprise.weight"] = np.zeros(2, np.float32)
    with pytest.raises(CheckpointError) as info:
        AlignTextModel(config, state)
    msg = str(info.value)
    assert "embeddings.word_embeddings.weight: expected (31, 8), found (30, 8)" in msg
    assert "encoder.layer.2.attention.self.query.weight: expected (8, 8)" in msg  # missing
    assert "surprise.weight: found (2,)" in msg  # unexpected
    with pytest.raises(CheckpointError, match="model directory not found"):
        AlignTextModel.from_pretrained(tmp_path / "nope")


@pytest.fixture(scope="module")
def tiny_model():
    hf = reference.text_model(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=12, max_position_embeddings=10)
    return AlignTextModel(AlignTextConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=12, max_position_embeddings=10),
                          {k: v.numpy() for k, v in hf.state_dict().items()})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_ids=[[1, 2, 30]]), r"input_ids\[0, 2\] = 30 is out of range: must be in \[0, 30\)"),
        (dict(input_ids=[[1, -1]]), r"input_ids\[0, 1\] = -1 is out of range"),
        (dict(input_ids=[[1, 2]], attention_mask=[[1, 1, 0]]), r"attention_mask has shape \(1, 3\), input_ids has \(1, 2\)"),
        (dict(input_ids=[[1, 2]], attention_mask=[[1, 2]]), r"attention_mask\[0, 1\] = 2 is out of range"),
        (dict(input_ids=[[1, 2]], token_type_ids=[[0, 2]]), r"token_type_ids\[0, 1\] = 2 is out of range"),
        (dict(input_ids=[list(range(11))]), r"11 tokens per sequence, more than max_position_embeddings=10"),
        (dict(input_ids=np.zeros((0, 4), np.int64)), r"input_ids is empty \(shape \(0, 4\)\)"),
        (dict(input_ids=np.zeros((2, 0), np.int64)), r"input_ids is empty"),
        (dict(input_ids=[1, 2, 3]), r"input_ids must have 2 dimensions \[batch, seq_len\], found shape \(3,\)"),
        (dict(input_ids=[[1.0, 2.0]]), r"input_ids must hold integers, found dtype float64"),
        (dict(input_ids=[[1, 2], [3]]), r"input_ids must be a rectangular"),
    ],
)
def test_bad_inputs_are_clear_errors(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(**kwargs)


def test_default_mask_and_token_types(tiny_model):
    ids = np.array([[1, 5, 7]])
    a = tiny_model(ids).last_hidden_state
    b = tiny_model(ids, np.ones_like(ids), np.zeros_like(ids)).last_hidden_state
    assert_close(a, b, atol=0, rtol=0)


def test_padding_does_not_change_real_tokens(tiny_model):
    """Right padding changes nothing for the real tokens of a sequence (the mask works)."""
    short = tiny_model(np.array([[1, 5, 7]])).last_hidden_state
    padded = tiny_model(np.array([[1, 5, 7, 0, 0]]), np.array([[1, 1, 1, 0, 0]])).last_hidden_state
    assert_close(padded[:, :3], short, **F32)
