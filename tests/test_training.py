"""The whole model's gradient (minialign.training.gradients) against transformers' autograd.

transformers' AlignModel in training mode (batchnorm on batch statistics; dropout and
drop-connect set to 0 so both sides compute the same function), return_loss=True, backward:
every parameter's gradient, the loss and the batchnorm running statistics must match.
"""

import numpy as np
import pytest
import torch

from helpers import assert_close
import minialign
from minialign.config import nano_config
from minialign.training.gradients import forward_backward
from minialign.training.recipe import init_params
from reference import randomize_

TEXT = dict(vocab_size=50, hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=37,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
VISION = dict(width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=64, drop_connect_rate=0.0)


def _batch(rng, B, T, size):
    input_ids = rng.integers(1, TEXT["vocab_size"], (B, T))
    attention_mask = np.ones((B, T), dtype=np.int64)
    attention_mask[1, T - 3:] = 0  # a padded caption
    pixel_values = rng.uniform(-1, 1, (B, 3, size, size)).astype(np.float32)
    return input_ids, attention_mask, pixel_values


@pytest.mark.parametrize("text_act, vision_act", [("gelu", "swish"),  # ALIGN's own
                                                   ("quick_gelu", "gelu_pytorch_tanh")])  # two other pairs
def test_gradients_match_transformers(text_act, vision_act):
    from transformers import AlignConfig, AlignModel

    hf = randomize_(AlignModel(AlignConfig(text_config={**TEXT, "hidden_act": text_act},
                                           vision_config={**VISION, "hidden_act": vision_act}, projection_dim=80)),
                    seed=5)
    with torch.no_grad():
        hf.temperature.fill_(0.3)
    params = {k: v.detach().numpy().copy() for k, v in hf.state_dict().items() if not k.endswith("num_batches_tracked")}
    config = minialign.AlignConfig.from_dict(hf.config.to_dict())
    input_ids, attention_mask, pixel_values = _batch(np.random.default_rng(0), 3, 9, 35)

    hf.train()
    out = hf(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask),
             pixel_values=torch.from_numpy(pixel_values), return_loss=True)
    out.loss.backward()
    # transformers passes batch_norm_momentum=0.99 to torch for every batchnorm but expand_bn
    # (see backward.batch_norm_forward); ours takes one momentum, so compare those buffers.
    loss, grads, buffers = forward_backward(params, config, input_ids, attention_mask, pixel_values,
                                          bn_momentum=0.99)

    assert_close(loss, out.loss, atol=1e-5, rtol=1e-5, name="loss")
    expected = {name: p.grad for name, p in hf.named_parameters() if p.grad is not None}
    assert set(grads) == set(expected), set(grads) ^ set(expected)
    for name, g in expected.items():
        # Float32 gradients through ~30 layers, summed in other orders: 1e-3 of the parameter's
        # largest gradient, with a floor of 1e-6 for gradients that are zero in exact arithmetic
        # (the key bias: adding a constant to every score of a row leaves the softmax unchanged)
        # and come out as rounding noise (~1e-9) on both sides.
        atol = max(1e-3 * float(g.abs().max()), 1e-6)
        assert grads[name].shape == tuple(g.shape), name
        assert_close(grads[name], g, atol=atol, rtol=0, name=f"grad {name}")
    state = hf.state_dict()
    compared = [n for n in buffers if "expand_bn" not in n]
    assert compared
    for name in compared:
        assert_close(buffers[name], state[name], atol=1e-5, rtol=1e-4, name=name)


def test_init_params_fit_the_model_and_train_a_step():
    config = nano_config(vocab_size=60)
    params = init_params(config, seed=0)
    from minialign import AlignModel

    model = AlignModel(config, params)  # names and shapes as the model expects
    assert model.temperature == pytest.approx(0.07)
    rng = np.random.default_rng(1)
    input_ids, attention_mask, pixel_values = _batch(rng, 4, 7, 64)
    input_ids[:] = rng.integers(1, 60, input_ids.shape)
    loss, grads, buffers = forward_backward(params, config, input_ids, attention_mask, pixel_values)
    assert np.isfinite(loss) and loss > 0
    assert all(np.isfinite(g).all() and g.shape == params[n].shape for n, g in grads.items())
    assert "text_model.pooler.dense.weight" not in grads
    assert all(n.endswith(("running_mean", "running_var")) for n in buffers)


def test_mismatched_batch_is_an_error():
    config = nano_config(vocab_size=60)
    params = init_params(config)
    input_ids, attention_mask, pixel_values = _batch(np.random.default_rng(2), 3, 5, 64)
    with pytest.raises(ValueError, match="need as many captions as images: input_ids has 3 rows, pixel_values 2"):
        forward_backward(params, config, input_ids, attention_mask, pixel_values[:2])


@pytest.mark.parametrize("field", ["text_config.hidden_dropout_prob", "text_config.attention_probs_dropout_prob",
                                   "vision_config.drop_connect_rate"])
def test_forward_backward_refuses_dropout_it_does_not_implement(field):
    """A non-zero rate would be ignored, training another model than the config describes."""
    config = nano_config(vocab_size=30)
    tower, name = field.split(".")
    setattr(getattr(config, tower), name, 0.2)
    rng = np.random.default_rng(0)
    input_ids, attention_mask, pixel_values = _batch(rng, 2, 5, config.vision_config.image_size)
    with pytest.raises(ValueError, match=rf"without dropout and drop-connect; set these to 0: {field}=0.2"):
        forward_backward(init_params(config), config, input_ids, attention_mask, pixel_values)


@pytest.mark.parametrize("tower", ["text_config", "vision_config"])
def test_an_activation_without_a_backward_is_refused_before_any_work(tower):
    """mish runs (every backend has it) but has no backward here: training says so, naming the field."""
    config = nano_config(vocab_size=30)
    getattr(config, tower).hidden_act = "mish"
    input_ids, attention_mask, pixel_values = _batch(np.random.default_rng(0), 2, 5, 48)
    with pytest.raises(ValueError, match=rf"{tower}.hidden_act='mish': minialign can run this activation but has no "
                                         r"backward pass for it, so it cannot train the model; activations it can "
                                         r"train: \['gelu'"):
        forward_backward(init_params(config), config, input_ids, attention_mask, pixel_values)


def test_the_recorded_text_forward_is_the_model_forward():
    """RecordingOps computes what the fast NumPy backend computes, and its tape covers every
    weight of the text tower but the pooler (off the loss's path)."""
    from minialign.backends import numpy as fast
    from minialign.text_model import AlignTextModel
    from minialign.training.gradients import RecordingOps

    config = nano_config(vocab_size=60)
    params = {k[len("text_model."):]: v for k, v in init_params(config, seed=2).items() if k.startswith("text_model.")}
    input_ids, attention_mask, _ = _batch(np.random.default_rng(4), 3, 9, 8)
    input_ids[:] = np.random.default_rng(5).integers(1, 60, input_ids.shape)
    recorder = RecordingOps()
    recorded = AlignTextModel(config.text_config, params, ops=recorder)
    hidden = recorded(input_ids, attention_mask).last_hidden_state
    expected = AlignTextModel(config.text_config, params, ops=fast)(input_ids, attention_mask).last_hidden_state
    np.testing.assert_array_equal(hidden, expected)
    by_id = recorder.backward([(hidden, np.ones_like(hidden))])
    reached = {name for name, tensor in recorded.tensors.items() if id(tensor) in by_id}
    assert reached == {name for name in params if not name.startswith("pooler.")}
