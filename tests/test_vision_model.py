"""The EfficientNet vision tower against transformers' AlignVisionModel with the same weights.

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
from minialign import AlignVisionConfig, AlignVisionModel, CheckpointError
from minialign.backends.contract import ACTIVATION_NAMES
from minialign.vision_model import block_specs, round_filters

F32 = TOLERANCES["float32"]
CPU_BACKENDS = ("numpy", "reference")  # both must match transformers to the same tolerance


def _hf_vision(seed=0, **config):
    from transformers import AlignVisionConfig as HFConfig
    from transformers import AlignVisionModel as HFModel

    return reference.randomize_(HFModel(HFConfig(**config)), seed=seed)


def _ours(hf, tmp_path) -> AlignVisionModel:
    hf.save_pretrained(tmp_path)
    return AlignVisionModel.from_pretrained(tmp_path)


def test_align_base_block_table():
    """The facts the docs quote: 55 blocks, widths 64 -> 640, residuals where transformers adds them."""
    specs = block_specs(AlignVisionConfig())
    assert len(specs) == 55
    assert round_filters(AlignVisionConfig(), 32) == 64
    assert specs[-1].out_dim == 640
    assert [s.stride for s in specs].count(2) == 4
    assert not any(s.residual for s in specs if s.index in (0, 4, 11, 18, 28, 38, 51))  # first of each stage
    assert sum(s.residual for s in specs) == 55 - 7
    assert specs[0].expand is False and specs[0].se_dim == 16  # int(64 * 0.25)


@given(
    width=st.sampled_from([0.1, 0.25]),
    depth=st.sampled_from([0.3, 0.6]),
    padding=st.sampled_from([[], [1], [2, 3]]),
    pooling=st.sampled_from(["mean", "max"]),
    size=st.integers(33, 48),  # five stride-2 stages: smaller inputs vanish (tested below)
    batch=st.integers(1, 2),
    act=st.sampled_from(ACTIVATION_NAMES),  # transformers applies it in four places per block
    kernels=st.sampled_from([[3, 3, 5, 3, 5, 5, 3], [2, 4, 5, 3, 6, 5, 3]]),  # even sizes: asymmetric "same"
    seed=st.integers(0, 2**31),
)
def test_matches_transformers_on_small_configs(tmp_path_factory, width, depth, padding, pooling, size, batch, act,
                                               kernels, seed):
    hf = _hf_vision(seed % 1000, width_coefficient=width, depth_coefficient=depth, depthwise_padding=padding,
                    pooling_type=pooling, hidden_dim=64, hidden_act=act, kernel_sizes=kernels)
    directory = tmp_path_factory.mktemp("vision")
    x = np.random.default_rng(seed).uniform(-1, 1, (batch, 3, size, size + 3)).astype(np.float32)
    with torch.no_grad():
        ref = hf(torch.from_numpy(x), output_hidden_states=True)
    hf.save_pretrained(directory)
    for backend in CPU_BACKENDS:
        ours = AlignVisionModel.from_pretrained(directory, backend=backend)
        out = ours(x, output_hidden_states=True)
        assert len(out.hidden_states) == len(ref.hidden_states) == len(ours.blocks) + 1
        for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states)):
            assert_close(a, b, **F32, name=f"{backend}: hidden_states[{i}]")
        assert_close(out.last_hidden_state, ref.last_hidden_state, **F32, name=f"{backend}: last_hidden_state")
        assert_close(out.pooler_output, ref.pooler_output, **F32, name=f"{backend}: pooler_output")


def test_full_align_base_vision_tower_at_289(tmp_path):
    """align-base's vision config at 289x289 with random BN statistics and affine params, on both
    NumPy backends."""
    hf = _hf_vision(seed=11)
    bn = hf.encoder.blocks[20].depthwise_conv.depthwise_norm
    assert bn.running_var.std() > 0.1 and (bn.weight - 1).abs().max() > 0.1  # really non-trivial
    x = np.random.default_rng(4).uniform(-1, 1, (2, 3, 289, 289)).astype(np.float32)
    with torch.no_grad():
        ref = hf(torch.from_numpy(x))
    hf.save_pretrained(tmp_path)
    for backend in CPU_BACKENDS:
        ours = AlignVisionModel.from_pretrained(tmp_path, backend=backend)
        assert ours.config == AlignVisionConfig()
        out = ours(x)
        assert out.last_hidden_state.shape == tuple(ref.last_hidden_state.shape) == (2, 640, 9, 9)
        err = max_abs_error(out.pooler_output, ref.pooler_output)
        assert err <= 1e-4, f"{backend}: pooler_output max abs error {err:.2e} > 1e-4"
        assert_close(out.pooler_output, ref.pooler_output, **TOLERANCES["float32_model"],
                     name=f"{backend}: pooler_output")


def test_same_bits_on_any_number_of_threads_and_bands(monkeypatch):
    """The fused ops split their work into bands of rows on a thread pool; every element is
    computed by the same float32 operations whatever the split, so the outputs are identical."""
    from minialign.backends import numpy as numpy_ops  # the default backend, whose ops use the threads

    hf = _hf_vision(seed=5, width_coefficient=0.25, depth_coefficient=0.3, hidden_dim=64)
    ours = AlignVisionModel(AlignVisionConfig(width_coefficient=0.25, depth_coefficient=0.3, hidden_dim=64),
                            {k: v.numpy() for k, v in hf.state_dict().items()})
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 45, 41)).astype(np.float32)
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", "1")
    expected = ours(x, output_hidden_states=True)
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", "3")
    monkeypatch.setattr(numpy_ops, "_DEPTHWISE_BAND", 64)  # a band per output row or so: many bands
    monkeypatch.setattr(numpy_ops, "_EPILOGUE_BAND", 64)
    out = ours(x, output_hidden_states=True)
    for i, (a, b) in enumerate(zip(out.hidden_states, expected.hidden_states)):
        np.testing.assert_array_equal(a, b, err_msg=f"hidden_states[{i}]")
    np.testing.assert_array_equal(out.pooler_output, expected.pooler_output)


def test_stem_gives_144_at_289():
    """transformers' right/bottom stem padding: 289 -> 144 (TensorFlow's graph gives 145)."""
    config = AlignVisionConfig(width_coefficient=0.1, depth_coefficient=0.1)
    shapes = AlignVisionModel.expected_shapes(config)
    params = {k: np.ones(s, np.float32) for k, s in shapes.items()}
    model = AlignVisionModel(config, params)
    assert model.stem(np.zeros((1, 289, 289, 3), np.float32)).shape[1:3] == (144, 144)


def test_loads_from_full_align_checkpoint_and_saves_for_transformers(tmp_path):
    from transformers import AlignConfig, AlignModel
    from transformers import AlignVisionModel as HFModel

    config = AlignConfig(
        text_config=dict(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8),
        vision_config=dict(width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=32),
        projection_dim=8,
    )
    align = reference.randomize_(AlignModel(config), seed=3)
    align.save_pretrained(tmp_path / "align")
    ours = AlignVisionModel.from_pretrained(tmp_path / "align")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 33, 33)).astype(np.float32)
    with torch.no_grad():
        ref = align.vision_model(torch.from_numpy(x)).pooler_output
    assert_close(ours(x).pooler_output, ref, **F32)

    ours.save_pretrained(tmp_path / "mine")
    back = HFModel.from_pretrained(tmp_path / "mine").eval()
    for name, tensor in align.vision_model.state_dict().items():  # num_batches_tracked counters included
        assert torch.equal(back.state_dict()[name], tensor), name


def test_wrong_checkpoint_names_keys(tmp_path):
    hf = _hf_vision(width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=16)
    hf.save_pretrained(tmp_path)
    config = AlignVisionConfig.from_pretrained(tmp_path)
    config.width_coefficient = 0.5  # stem width 8 -> 16
    state = {k: v.numpy() for k, v in hf.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"embeddings.convolution.weight: expected \(16, 3, 3, 3\), found \(8, 3, 3, 3\)"):
        AlignVisionModel(config, state)


@pytest.fixture(scope="module")
def tiny():
    config = AlignVisionConfig(width_coefficient=0.1, depth_coefficient=0.1)
    rng = np.random.default_rng(0)
    params = {k: rng.uniform(0.5, 1.5, s).astype(np.float32) for k, s in AlignVisionModel.expected_shapes(config).items()}
    return AlignVisionModel(config, params)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((1, 4, 8, 8), np.float32), r"pixel_values has 4 channels at axis 1, the model expects num_channels=3"),
        (np.zeros((1, 8, 8, 3), np.float32), r"channels-last input\? pass \[B, C, H, W\]"),
        (np.zeros((3, 8, 8), np.float32), r"pixel_values must have 4 dimensions"),
        (np.zeros((1, 3, 8, 8), np.uint8), r"pixel_values must be floating point .* found dtype uint8"),
        (np.zeros((0, 3, 8, 8), np.float32), r"pixel_values is empty"),
        (np.zeros((1, 3, 9, 12), np.float32), r"input image is too small for this model: block \d+ gets a 1x1"),
    ],
)
def test_bad_inputs_are_clear_errors(tiny, x, message):
    with pytest.raises(ValueError, match=message):
        tiny(x)


def test_a_map_wider_than_the_pooling_window_is_refused_as_transformers_fails(tmp_path):
    """transformers pools with a hidden_dim x hidden_dim window (AvgPool2d, ceil_mode): a last map
    wider than that pools to several windows and its reshape to [B, C] fails; minialign says why."""
    hf = _hf_vision(width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=4)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 161, 161)).astype(np.float32)  # last map 5x5
    with pytest.raises(RuntimeError), torch.no_grad():
        hf(torch.from_numpy(x))
    ours = _ours(hf, tmp_path)
    with pytest.raises(ValueError, match=r"the last feature map is 5x5, larger than the pooling window hidden_dim=4: "
                                         r"transformers' ALIGN pools with a hidden_dim-wide window"):
        ours(x)
    small = x[:, :, :129, :129]  # last map 4x4: one window, the whole map, in both
    with torch.no_grad():
        expected = hf(torch.from_numpy(np.ascontiguousarray(small))).pooler_output
    assert_close(ours(small).pooler_output, expected, **F32, name="pooler_output at the window's size")
