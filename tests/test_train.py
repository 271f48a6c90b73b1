"""The optimiser and the training loop (minialign.training.optim, .loop) on a toy problem whose gradient is known.

The toy: a softmax classifier with a learnable temperature and a batchnorm-like running mean,

    logits = (x W^T + b) / temperature        x [B, D], W [C, D], b [C], temperature []
    loss   = mean cross-entropy(logits, y)

so it has every kind of parameter ALIGN has (a matrix that is decayed, a bias and a scalar
temperature that are not, a buffer that is copied rather than stepped).
"""

import json
import math

import numpy as np
import pytest
import torch
from helpers import TOLERANCES, assert_close

from minialign.checkpoint import CheckpointError, read_safetensors, write_safetensors
from minialign.cli import main
from minialign.training import recipe
from minialign.training.loop import (
    LOG_KEYS,
    TEMPERATURE_RANGE,
    ShuffledBatches,
    clamp_temperature,
    load_checkpoint,
    train_loop,
)
from minialign.training.optim import AdamW, clip_grad_norm, lr_at, no_decay

N, D, C = 64, 5, 3  # examples, features, classes
BATCH = 16  # 4 batches per epoch: 10 steps cross two epoch boundaries


def toy_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)).astype(np.float32)
    y = np.argmax(x @ rng.standard_normal((C, D)).T, axis=1)  # linearly separable labels
    params = {
        "weight": (0.1 * rng.standard_normal((C, D))).astype(np.float32),
        "bias": np.zeros(C, np.float32),
        "temperature": np.array(1.0, np.float32),
        "running_mean": np.zeros(D, np.float32),
    }
    return x, y, params


def toy_loss_and_grads(params, batch):
    """The toy's loss, hand-written gradient, and updated running mean (momentum 0.1)."""
    x, y = batch["x"], batch["y"]
    t = params["temperature"]
    z = x @ params["weight"].T + params["bias"]  # [B, C]
    logits = z / t
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(probs[np.arange(len(y)), y]))
    dlogits = probs.copy()
    dlogits[np.arange(len(y)), y] -= 1
    dlogits /= len(y)
    dz = dlogits / t
    grads = {
        "weight": dz.T @ x,
        "bias": dz.sum(axis=0),
        "temperature": np.asarray(-(dlogits * z).sum() / (t * t), np.float32),  # d(z/t)/dt = -z/t^2
    }
    buffers = {"running_mean": 0.9 * params["running_mean"] + 0.1 * x.mean(axis=0)}
    return float(loss), grads, buffers


def toy_batches(x, y, **kwargs) -> ShuffledBatches:
    return ShuffledBatches(N, BATCH, lambda i: {"x": x[i], "y": y[i]}, seed=7, **kwargs)


HYPER = {"lr": 0.05, "warmup": 2, "weight_decay": 0.1, "max_grad_norm": 0.5, "progress": False}


def test_toy_gradient_matches_torch_autograd():
    x, y, params = toy_data()
    _, grads, _ = toy_loss_and_grads(params, {"x": x, "y": y})
    w, b, t = (torch.tensor(params[k], requires_grad=True) for k in ("weight", "bias", "temperature"))
    torch.nn.functional.cross_entropy((torch.tensor(x) @ w.T + b) / t, torch.tensor(y)).backward()
    for name, tensor in zip(("weight", "bias", "temperature"), (w, b, t)):
        assert_close(grads[name], tensor.grad, **TOLERANCES["float32"], name=name)


# -- AdamW ---------------------------------------------------------------------------------------


def test_no_decay_rule():
    assert not no_decay("encoder.weight", np.zeros((4, 3)))  # a matrix
    assert not no_decay("conv.weight", np.zeros((8, 1, 3, 3)))  # a (depthwise) conv kernel
    assert no_decay("encoder.bias", np.zeros(4))
    assert no_decay("LayerNorm.weight", np.zeros(4))  # a norm's scale is 1-D
    assert no_decay("temperature", np.zeros(()))


def test_adamw_matches_torch(rng):
    hyper = {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.1}
    shapes = {"encoder.weight": (4, 3), "conv.weight": (2, 1, 3, 3), "encoder.bias": (4,), "norm.weight": (3,),
              "temperature": ()}
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    decayed = ["encoder.weight", "conv.weight"]  # written out, not computed with no_decay
    reference = torch.optim.AdamW(
        [{"params": [tensors[k] for k in decayed], "weight_decay": hyper["weight_decay"]},
         {"params": [t for k, t in tensors.items() if k not in decayed], "weight_decay": 0.0}],
        lr=1.0, betas=(hyper["beta1"], hyper["beta2"]), eps=hyper["eps"],
    )
    ours = AdamW(**hyper)
    for step in range(1, 7):
        lr = lr_at(step, peak=0.1, warmup=2, total=6)
        grads = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        for group in reference.param_groups:
            group["lr"] = lr
        reference.step()
        ours.step(params, grads, lr)
        for k in shapes:
            assert_close(params[k], tensors[k], **TOLERANCES["float32"], name=f"step {step}: {k}")
            assert_close(ours.exp_avg_sq[k], reference.state[tensors[k]]["exp_avg_sq"], **TOLERANCES["float32"],
                         name=f"step {step}: exp_avg_sq of {k}")


def test_adamw_state_dict_round_trips(rng, tmp_path):
    params = {"w": rng.standard_normal((3, 2)).astype(np.float32), "temperature": np.array(0.5, np.float32)}
    opt = AdamW(weight_decay=0.2)
    opt.step(params, {k: np.ones_like(v) for k, v in params.items()}, 0.1)
    state = opt.state_dict()
    assert set(state) == {"step", "exp_avg.w", "exp_avg_sq.w", "exp_avg.temperature", "exp_avg_sq.temperature"}
    write_safetensors(state, tmp_path / "opt.safetensors")
    again = AdamW(weight_decay=0.2)
    again.load_state_dict(read_safetensors(tmp_path / "opt.safetensors"))
    assert again.step_count == 1
    for k in params:
        assert np.array_equal(again.exp_avg[k], opt.exp_avg[k]) and again.exp_avg[k].flags.writeable
        assert np.array_equal(again.exp_avg_sq[k], opt.exp_avg_sq[k])


def test_adamw_refuses_read_only_params():
    params = {"w": np.zeros(3, np.float32)}
    params["w"].flags.writeable = False
    with pytest.raises(TypeError, match="writable float32"):
        AdamW().step(params, {"w": np.ones(3, np.float32)}, 0.1)


# -- schedule, clipping, temperature ------------------------------------------------------------


def test_lr_schedule_by_hand():
    kw = {"peak": 1.0, "warmup": 10, "total": 110}
    assert lr_at(0, **kw) == 0.0
    assert lr_at(5, **kw) == 0.5  # half-way up the warmup
    assert lr_at(10, **kw) == 1.0  # the end of warmup is the peak
    assert lr_at(60, **kw) == pytest.approx(0.5)  # half-way down the cosine: (peak + final) / 2
    assert lr_at(35, **kw) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(110, **kw) == 0.0
    assert lr_at(60, **kw, final_fraction=0.1) == pytest.approx(0.55)
    assert lr_at(110, **kw, final_fraction=0.1) == pytest.approx(0.1)
    assert lr_at(500, **kw, final_fraction=0.1) == pytest.approx(0.1)  # past the end: stays at final
    assert lr_at(0, peak=2.0, warmup=0, total=10) == 2.0  # no warmup: the cosine starts at the peak
    with pytest.raises(ValueError, match="warmup"):
        lr_at(1, peak=1.0, warmup=20, total=10)


@pytest.mark.parametrize("max_norm", [0.5, 1e3], ids=["clipped", "unchanged"])
def test_clip_grad_norm_matches_torch(rng, max_norm):
    grads = {"a": rng.standard_normal((4, 3)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32),
             "temperature": np.array(0.7, np.float32)}
    tensors = [torch.zeros(g.shape, requires_grad=True) for g in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g)
    expected = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    norm = clip_grad_norm(grads, max_norm)
    assert norm == pytest.approx(float(expected), rel=1e-6)
    for (name, g), t in zip(grads.items(), tensors):
        assert_close(g, t.grad, **TOLERANCES["float32"], name=name)


def test_clamp_temperature():
    for value, clamped in [(5.0, TEMPERATURE_RANGE[1]), (1e-4, TEMPERATURE_RANGE[0]), (0.3, 0.3)]:
        params = {"temperature": np.array(value, np.float32)}
        clamp_temperature(params)
        assert params["temperature"] == np.float32(clamped) and params["temperature"].shape == ()
    clamp_temperature({"w": np.zeros(2)})  # no temperature: nothing to do


# -- the loop -----------------------------------------------------------------------------------


def test_loop_reduces_the_toy_loss():
    x, y, params = toy_data()
    before = {k: v.copy() for k, v in params.items()}
    final, history = train_loop(params, toy_loss_and_grads, toy_batches(x, y), steps=150, **HYPER)
    assert all(np.array_equal(params[k], before[k]) for k in params)  # the caller's params are not modified
    first, last = history[0]["loss"], np.mean([r["loss"] for r in history[-10:]])
    assert last < 0.3 * first, (first, last)
    assert TEMPERATURE_RANGE[0] <= final["temperature"] <= TEMPERATURE_RANGE[1]
    assert not np.array_equal(final["running_mean"], before["running_mean"])  # buffers were copied in


def test_metrics_log_lines(tmp_path):
    x, y, params = toy_data()
    log = tmp_path / "log.jsonl"
    evals = []

    def eval_fn(p):
        evals.append(p["temperature"].item())
        return {"accuracy": float(np.mean(np.argmax(x @ p["weight"].T + p["bias"], axis=1) == y))}

    _, history = train_loop(params, toy_loss_and_grads, toy_batches(x, y), steps=7, eval_fn=eval_fn, eval_every=3,
                            log_path=log, **HYPER)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records == history
    assert [r["step"] for r in records] == list(range(1, 8))
    for r in records:
        assert set(LOG_KEYS) <= set(r) <= set(LOG_KEYS) | {"eval"}
        assert r["examples_per_s"] > 0 and r["elapsed_s"] > 0 and r["grad_norm"] > 0
        assert r["lr"] == lr_at(r["step"], peak=HYPER["lr"], warmup=HYPER["warmup"], total=7)
        assert r["temperature"] is not None
    assert [r["step"] for r in records if "eval" in r] == [3, 6, 7]  # every 3 steps and after the last
    assert len(evals) == 3 and 0 <= records[-1]["eval"]["accuracy"] <= 1


class Crash(Exception):
    pass


def test_resume_is_bit_identical(tmp_path):
    """10 steps straight == 5 steps, a crash, load the checkpoint into fresh objects, 5 more."""
    x, y, params = toy_data()
    straight, straight_history = train_loop(params, toy_loss_and_grads, toy_batches(x, y), steps=10, **HYPER)

    calls = []

    def crashes_at_step_6(p, batch):
        calls.append(1)
        if len(calls) == 6:
            raise Crash
        return toy_loss_and_grads(p, batch)

    with pytest.raises(Crash):
        train_loop(params, crashes_at_step_6, toy_batches(x, y), steps=10, checkpoint_dir=tmp_path,
                   checkpoint_every=5, **HYPER)
    state = load_checkpoint(tmp_path)
    assert state.step == 5 and state.data_position == 5 * BATCH - N  # one epoch and one batch in
    resumed, resumed_history = train_loop(
        state.params, toy_loss_and_grads, toy_batches(x, y, rng_state=state.rng_state, position=state.data_position),
        steps=10, optimizer=state.optimizer, start_step=state.step, checkpoint_dir=tmp_path, checkpoint_every=5,
        **HYPER,
    )
    for name in straight:
        assert np.array_equal(resumed[name], straight[name]), name
    assert [r["loss"] for r in resumed_history] == [r["loss"] for r in straight_history[5:]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # the step-5 files were replaced
        "optimizer-00000010.safetensors", "params-00000010.safetensors", "trainer_state.json"]


def test_non_finite_loss_stops_the_loop():
    x, y, params = toy_data()

    def nan_loss(p, batch):
        _, grads, buffers = toy_loss_and_grads(p, batch)
        return float("nan"), grads, buffers

    with pytest.raises(FloatingPointError, match="step 1"):
        train_loop(params, nan_loss, toy_batches(x, y), steps=3, **HYPER)


def test_shuffled_batches_visit_every_example_once_per_epoch():
    batches = ShuffledBatches(10, 3, lambda i: {"i": i}, seed=0)
    epoch = np.concatenate([next(batches)["i"] for _ in range(3)])  # 3 batches of 3; 1 example dropped
    assert len(set(epoch.tolist())) == 9
    assert len(next(batches)["i"]) == 3  # the next epoch starts with a full batch


# -- `minialign train` ---------------------------------------------------------------------------


def test_pixel_values_match_the_saved_image_processor(rng):
    # Images at the model's size: the processor's resize is then the identity.
    images = rng.integers(0, 256, (2, recipe.IMAGE_SIZE, recipe.IMAGE_SIZE, 3), dtype=np.uint8)
    expected = recipe.image_processor()(list(images))["pixel_values"]
    assert np.array_equal(recipe.pixel_values(images), expected)
    assert recipe.pixel_values(images).min() >= -1 and recipe.pixel_values(images).max() <= 1


@pytest.mark.parametrize(
    "argv, message",
    [  # the command's own checks name the option; the recipe's say what the value must be
        (["--steps", "0"], "--steps"),
        (["--steps", "3", "--config", "huge"], "--config"),
        (["--steps", "3", "--batch-size", "1"], "batch size must be between 2"),
        (["--steps", "3", "--lr", "-1"], "--lr"),
        (["--steps", "3", "--weight-decay", "-0.1"], "--weight-decay"),
        (["--steps", "3", "--resume"], "no training checkpoint"),
    ],
)
def test_train_argument_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    assert main(["train", "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("minialign train: error: ") and message in err
    assert not (tmp_path / "run").exists()  # nothing was written


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"steps": 3, "config": "huge"}, "unknown config 'huge' (known: nano)"),
        ({"steps": 3, "batch_size": 1}, "batch size must be between 2"),
        ({"steps": 3, "lr": -1}, "learning rate must be a positive number"),
        ({"steps": 3, "weight_decay": -0.1}, "weight decay must be a number >= 0, got -0.1"),
        ({"steps": 3, "resume": True}, "no training checkpoint"),
    ],
)
def test_run_training_checks_its_arguments_before_any_work(tmp_path, kwargs, message):
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        recipe.run_training(tmp_path / "run", **kwargs)
    assert message in str(info.value)
    assert not (tmp_path / "run").exists()


def test_train_passes_weight_decay_and_defaults_to_the_recipe(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(recipe, "run_training", lambda out, **kwargs: calls.append(kwargs) or
                        {"steps": 1, "final_loss": 0.0, "eval": None, "out_dir": str(out)})
    assert main(["train", "--out", str(tmp_path / "a"), "--steps", "1"]) == 0
    assert main(["train", "--out", str(tmp_path / "b"), "--steps", "1", "--weight-decay", "0.05"]) == 0
    assert [c["weight_decay"] for c in calls] == [recipe.WEIGHT_DECAY, 0.05]


# 6 test examples: one per held-out class. eval_every=0: evaluate after the last step only.
TINY_RUN = {"steps": 4, "batch_size": 4, "train_examples": 16, "test_examples": 6, "eval_every": 0, "progress": False}


def test_run_training_saves_a_usable_model_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    """A few steps of the real thing (nano ALIGN, synthetic data): the hub layout that `minialign
    classify` reads, and a run killed after its step-2 checkpoint that ends with the same weights."""
    from minialign import AlignModel, AlignProcessor

    straight = tmp_path / "straight"
    summary = recipe.run_training(straight, **TINY_RUN)
    assert summary["steps"] == 4 and summary["eval"]["zero_shot_top1"] is not None
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json",
                 "preprocessor_config.json", "labels.json", "train_log.jsonl"):
        assert (straight / name).is_file(), name
    examples = sorted(str(p) for p in (straight / "examples").glob("*.png"))
    labels = json.loads((straight / "labels.json").read_text())
    assert len(examples) == 6 and len(labels) == 36
    model, processor = AlignModel.from_pretrained(straight), AlignProcessor.from_pretrained(straight)
    assert processor(images=examples[0])["pixel_values"].shape == (1, 3, recipe.IMAGE_SIZE, recipe.IMAGE_SIZE)
    assert TEMPERATURE_RANGE[0] <= model.temperature <= TEMPERATURE_RANGE[1]
    assert main(["classify", *examples, "--labels", *labels[:5], "--model", str(straight), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 6

    forward_backward, calls = recipe.forward_backward, []

    def crashes_at_step_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Crash
        return forward_backward(*args, **kwargs)

    interrupted = tmp_path / "interrupted"
    monkeypatch.setattr(recipe, "CHECKPOINT_EVERY", 2)
    monkeypatch.setattr(recipe, "forward_backward", crashes_at_step_3)
    with pytest.raises(Crash):
        recipe.run_training(interrupted, **TINY_RUN)
    with pytest.raises(ValueError, match="already holds a training run .*; pass --resume"):
        recipe.run_training(interrupted, **TINY_RUN)
    with pytest.raises(ValueError, match=r"arguments of the first run \(--steps: 4 then, 5 now\)"):
        recipe.run_training(interrupted, **{**TINY_RUN, "steps": 5}, resume=True)
    assert recipe.run_training(interrupted, **TINY_RUN, resume=True)["resumed_from"] == 2
    a, b = read_safetensors(straight / "model.safetensors"), read_safetensors(interrupted / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    steps_logged = [json.loads(line)["step"] for line in (interrupted / "train_log.jsonl").read_text().splitlines()]
    assert steps_logged == [1, 2, 3, 4]  # the crashed run logged 1-2, the resumed one 3-4


def test_a_short_align_run_lowers_the_loss(tmp_path):
    """The real thing at CI size (nano ALIGN, 64 synthetic pairs, batches of 16, 40 steps: ~4 s):
    the contrastive loss falls from about ln(16) -- the loss of a model that cannot tell the 16
    pairs of a batch apart -- to well below it."""
    recipe.run_training(tmp_path / "m", steps=40, batch_size=16, train_examples=64, test_examples=6, eval_every=0,
                       progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "m" / "train_log.jsonl").read_text().splitlines()]
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < 0.8 * first and last < np.log(16), (first, last)


def test_saved_model_counts_batchnorm_batches_like_transformers(tmp_path):
    """transformers' checkpoints carry num_batches_tracked for every batchnorm; run_training's
    output has them too (= the steps trained), so transformers loads it without a warning."""
    from safetensors.numpy import load_file

    recipe.run_training(tmp_path / "m", steps=2, batch_size=4, train_examples=16, test_examples=6, eval_every=0,
                       progress=False)
    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    means = [k for k in state if k.endswith("running_mean")]
    assert means and all(int(state[k.replace("running_mean", "num_batches_tracked")]) == 2 for k in means)


def test_a_diverged_run_is_a_one_line_error_exit_2(tmp_path, capsys, monkeypatch):
    """train_loop stops a run whose loss turns non-finite; the CLI reports it like a bad argument."""
    def diverge(*args, **kwargs):
        raise FloatingPointError("step 3: loss nan, gradient norm nan; try a lower learning rate or max_grad_norm")

    monkeypatch.setattr(recipe, "run_training", diverge)
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "5", "--lr", "10"]) == 2
    err = capsys.readouterr().err
    assert err == ("minialign train: error: step 3: loss nan, gradient norm nan; "
                   "try a lower learning rate or max_grad_norm\n")


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "expected a JSON object, found list"),
    ('{"format": ', "is not valid JSON"),
    ('{"format": "something else"}', "is not a minialign training checkpoint"),
])
def test_a_broken_training_state_is_a_checkpoint_error_naming_the_file(tmp_path, content, message):
    (tmp_path / recipe.STATE_FILE).write_text(content)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(tmp_path)
    assert recipe.STATE_FILE in str(info.value)


@pytest.mark.parametrize("variety", [-0.1, 1.5, "all", True])
def test_run_training_refuses_a_variety_outside_zero_to_one_before_any_work(tmp_path, variety):
    from minialign.training.recipe import run_training

    with pytest.raises(ValueError, match=r"variety must be a number in \[0, 1\]"):
        run_training(tmp_path / "run", steps=1, variety=variety)
    assert not (tmp_path / "run").exists()  # refused before --out was created
