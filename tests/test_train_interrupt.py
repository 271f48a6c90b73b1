"""Ctrl-C during training, resuming a finished run, and the checks on the output folder.

Ctrl-C must save the last *finished* step and nothing half-done: resumed from that checkpoint,
training ends with the same weights, bit for bit, as a run never interrupted. The interrupt is
injected where a real Ctrl-C lands: as a KeyboardInterrupt from ``loss_and_grads`` (most of a
step's time), from the evaluation, and as a real SIGINT in the middle of the weight update.

The output folder is checked before any work: a test that expects a refusal makes rendering the
data fail loudly (``no_rendering``), so the refusal must come first.
"""

import json
import os
import signal

import numpy as np
import pytest
from test_train import BATCH, HYPER, TINY_RUN, toy_batches, toy_data, toy_loss_and_grads

from minialign import synthetic
from minialign.checkpoint import read_safetensors
from minialign.cli import main
from minialign.training import loop, recipe
from minialign.training.loop import TrainingInterrupted, load_checkpoint, train_loop

STEPS = 10  # of the toy: 4 batches an epoch, so 10 steps cross two epoch boundaries
EVERY = 3  # toy checkpoints at steps 3, 6, 9 and 10; not at 4, the end of the first epoch


def interrupted_at(call: int, loss_and_grads=toy_loss_and_grads):
    """``loss_and_grads`` that raises KeyboardInterrupt on its ``call``-th call, as Ctrl-C would mid-step."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return loss_and_grads(*args, **kwargs)

    return wrapped


def toy_run(tmp_path, loss_and_grads=toy_loss_and_grads, **kwargs):
    """Train the toy for STEPS with checkpoints and a log in tmp_path, from scratch or from its checkpoint."""
    x, y, params = toy_data()
    batches, where = toy_batches(x, y), {}
    if kwargs.pop("resume", False):
        state = load_checkpoint(tmp_path / "ckpt")
        params = state.params
        batches = toy_batches(x, y, rng_state=state.rng_state, position=state.data_position)
        where = {"optimizer": state.optimizer, "start_step": state.step}
    return train_loop(params, loss_and_grads, batches, steps=STEPS, checkpoint_dir=tmp_path / "ckpt",
                      checkpoint_every=EVERY, log_path=tmp_path / "log.jsonl", **where, **kwargs, **HYPER)


def logged_steps(path) -> list[int]:
    return [json.loads(line)["step"] for line in open(path, encoding="utf-8")]


@pytest.fixture(scope="module")
def straight():
    """The toy trained STEPS without a break: (final params, history)."""
    x, y, params = toy_data()
    return train_loop(params, toy_loss_and_grads, toy_batches(x, y), steps=STEPS, **HYPER)


def assert_bit_identical(ours, theirs):
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert np.array_equal(ours[name], theirs[name]), name


# -- the loop -----------------------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    2,  # step 2 interrupted: step 1 saved, mid-epoch
    5,  # step 5 interrupted after its batch drew epoch 2's order: epoch 1's end must be saved
    6,  # step 5 saved: one batch into epoch 2
    8,  # step 7 saved, replacing the checkpoint of step 6
])
def test_ctrl_c_saves_the_last_finished_step_and_resumes_bit_identical(tmp_path, straight, call):
    done = call - 1
    with pytest.raises(TrainingInterrupted) as info:
        toy_run(tmp_path, interrupted_at(call))
    assert isinstance(info.value, KeyboardInterrupt)  # what ends a program, if nobody catches it
    assert info.value.step == done and info.value.checkpoint_dir == str(tmp_path / "ckpt")
    assert str(info.value) == f"checkpoint saved at step {done} of {STEPS} in {tmp_path / 'ckpt'}"
    state = load_checkpoint(tmp_path / "ckpt")
    assert state.step == done
    assert state.data_position == ((done - 1) % 4 + 1) * BATCH  # after step `done`, not after the next one's batch
    assert logged_steps(tmp_path / "log.jsonl") == list(range(1, call))

    resumed, history = toy_run(tmp_path, resume=True)
    assert_bit_identical(resumed, straight[0])
    assert [r["loss"] for r in history] == [r["loss"] for r in straight[1][done:]]
    assert logged_steps(tmp_path / "log.jsonl") == list(range(1, STEPS + 1))  # each step once


def test_ctrl_c_at_a_checkpoint_step_keeps_that_checkpoint(tmp_path, straight):
    """Interrupted in step 4, right after the step-3 checkpoint: nothing to write again."""
    with pytest.raises(TrainingInterrupted) as info:
        toy_run(tmp_path, interrupted_at(4))
    assert info.value.step == 3 and sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "optimizer-00000003.safetensors", "params-00000003.safetensors", "trainer_state.json"]
    assert_bit_identical(toy_run(tmp_path, resume=True)[0], straight[0])


def test_ctrl_c_before_the_first_step_finishes_saves_nothing(tmp_path):
    with pytest.raises(TrainingInterrupted) as info:
        toy_run(tmp_path, interrupted_at(1))
    assert info.value.step == 0 and info.value.checkpoint_dir is None
    assert str(info.value) == f"step 1 of {STEPS} did not finish, nothing saved"
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "log.jsonl").exists()


def test_ctrl_c_before_a_resumed_run_finishes_a_step_leaves_its_checkpoint(tmp_path, straight):
    with pytest.raises(TrainingInterrupted):
        toy_run(tmp_path, interrupted_at(7))
    before = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}
    with pytest.raises(TrainingInterrupted) as info:
        toy_run(tmp_path, interrupted_at(1), resume=True)
    assert info.value.step == 6 and info.value.checkpoint_dir is None  # this call saved nothing ...
    assert {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()} == before  # ... and broke nothing
    assert_bit_identical(toy_run(tmp_path, resume=True)[0], straight[0])


def test_ctrl_c_during_an_evaluation_keeps_the_step_and_its_log_line(tmp_path, straight):
    """The step is done when the evaluation starts: it is saved, and logged without "eval"."""
    def eval_fn(params):
        if len(evals) == 1:  # the second evaluation, step 6
            raise KeyboardInterrupt
        evals.append(1)
        return {"temperature": float(params["temperature"])}

    evals = []
    with pytest.raises(TrainingInterrupted) as info:
        toy_run(tmp_path, eval_fn=eval_fn, eval_every=3)
    assert info.value.step == 6
    records = [json.loads(line) for line in open(tmp_path / "log.jsonl", encoding="utf-8")]
    assert [r["step"] for r in records] == list(range(1, 7))
    assert "eval" in records[2] and "eval" not in records[5]
    assert_bit_identical(toy_run(tmp_path, resume=True)[0], straight[0])


@pytest.mark.skipif(not hasattr(os, "kill") or os.name != "posix", reason="sends a real SIGINT to this process")
@pytest.mark.skipif(signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
                    reason="SIGINT is ignored in this process (started as a background job), so no Ctrl-C reaches it")
def test_a_real_ctrl_c_during_the_update_lets_the_step_finish(tmp_path, straight, monkeypatch):
    """SIGINT between AdamW and the batchnorm buffers of step 3: held back until the update is
    whole, then step 3 is saved. (Delivered at once, it would leave the weights half-updated.)"""
    clamp, calls = loop.clamp_temperature, []

    def clamp_then_ctrl_c(params):
        clamp(params)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(loop, "clamp_temperature", clamp_then_ctrl_c)
    with pytest.raises(TrainingInterrupted) as info:
        toy_run(tmp_path)
    assert info.value.step == 3 and len(calls) == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    monkeypatch.undo()
    assert_bit_identical(toy_run(tmp_path, resume=True)[0], straight[0])


# -- `minialign train` --------------------------------------------------------------------------


@pytest.fixture
def small_cli_runs(monkeypatch):
    """`minialign train` on TINY_RUN's data sizes (the command has no option for them)."""
    run_training = recipe.run_training

    def small(out, **kwargs):
        return run_training(out, **{**kwargs, "train_examples": TINY_RUN["train_examples"],
                                    "test_examples": TINY_RUN["test_examples"], "progress": False})

    monkeypatch.setattr(recipe, "run_training", small)
    return ["--steps", str(TINY_RUN["steps"]), "--batch-size", str(TINY_RUN["batch_size"]), "--eval-every", "0"]


@pytest.fixture
def no_rendering(monkeypatch):
    """Rendering the data (the first work of a run, seconds at full size) fails the test."""
    def generate(*args, **kwargs):
        raise AssertionError("the data was rendered")

    monkeypatch.setattr(synthetic, "generate", generate)


def model_weights(directory):
    return read_safetensors(directory / "model.safetensors")


def test_ctrl_c_in_minialign_train_exits_130_and_resume_is_bit_identical(tmp_path, capsys, monkeypatch,
                                                                        small_cli_runs):
    """The real thing (nano ALIGN, synthetic data) through the command: Ctrl-C in step 3 (no
    periodic checkpoint yet: CHECKPOINT_EVERY is 100), one line and exit 130, then --resume."""
    assert main(["train", "--out", str(tmp_path / "straight"), *small_cli_runs]) == 0
    forward_backward = recipe.forward_backward
    monkeypatch.setattr(recipe, "forward_backward", interrupted_at(3, forward_backward))
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["train", "--out", str(run), *small_cli_runs]) == 130
    assert capsys.readouterr().err == (f"minialign train: interrupted; checkpoint saved at step 2 of 4 in "
                                       f"{run / 'checkpoint'}; --resume continues from there\n")
    monkeypatch.setattr(recipe, "forward_backward", forward_backward)
    assert main(["train", "--out", str(run), *small_cli_runs, "--resume", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resumed_from"] == 2
    assert_bit_identical(model_weights(run), model_weights(tmp_path / "straight"))
    assert logged_steps(run / "train_log.jsonl") == [1, 2, 3, 4]


def test_ctrl_c_before_the_first_step_leaves_a_folder_the_same_command_restarts(tmp_path, monkeypatch):
    monkeypatch.setattr(recipe, "forward_backward", interrupted_at(1, recipe.forward_backward))
    with pytest.raises(TrainingInterrupted, match="no step finished, nothing saved; the same command starts again"):
        recipe.run_training(tmp_path / "run", **TINY_RUN)
    monkeypatch.undo()
    assert recipe.run_training(tmp_path / "run", **TINY_RUN)["steps"] == 4  # vocab.txt and run_args.json: no run yet


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A TINY_RUN trained to its end (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    recipe.run_training(out, **TINY_RUN)
    return out


def test_resume_of_a_finished_run_does_nothing_and_says_so(finished_run, no_rendering):
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()}
    summary = recipe.run_training(finished_run, **TINY_RUN, resume=True)
    last = json.loads(open(finished_run / "train_log.jsonl", encoding="utf-8").readlines()[-1])
    assert summary == {"out_dir": str(finished_run), "steps": 4, "resumed_from": 4, "final_loss": last["loss"],
                       "eval": last["eval"], "seconds": 0.0, "already_done": True}
    assert {p: p.stat().st_mtime_ns for p in finished_run.rglob("*") if p.is_file()} == before


def test_ctrl_c_while_saving_the_model_then_resume_finishes_the_save(finished_run, tmp_path, monkeypatch):
    """Ctrl-C after the last step, while the model is written: its checkpoint is saved, labels.json
    (written last) is not, and --resume saves the model without training again."""
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe, "image_processor", interrupted)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="the model was not completely saved; its checkpoint at step 4"):
        recipe.run_training(run, **TINY_RUN)
    assert (run / "model.safetensors").is_file() and not (run / "labels.json").exists()
    monkeypatch.undo()
    summary = recipe.run_training(run, **TINY_RUN, resume=True)
    assert summary["already_done"] is False and summary["resumed_from"] == 4
    assert summary["final_loss"] == json.loads(open(run / "train_log.jsonl", encoding="utf-8").readlines()[-1])["loss"]
    assert (run / "labels.json").is_file() and len(list((run / "examples").glob("*.png"))) == 6
    assert_bit_identical(model_weights(run), model_weights(finished_run))
    assert logged_steps(run / "train_log.jsonl") == [1, 2, 3, 4]


@pytest.mark.parametrize("changed, message", [
    ({"steps": 40}, "(--steps: 4 then, 40 now)"),  # not warmup: derived from the steps (0 then, 2 now)
    ({"batch_size": 8, "lr": 1e-3}, "(--batch-size: 4 then, 8 now, --lr: 0.003 then, 0.001 now)"),
    ({"warmup": 1}, "(warmup: 0 then, 1 now)"),  # set by a Python caller: named as run_training's argument
])
def test_resume_with_other_arguments_names_what_was_passed(finished_run, no_rendering, changed, message):
    with pytest.raises(ValueError) as info:
        recipe.run_training(finished_run, **{**TINY_RUN, **changed}, resume=True)
    assert str(info.value) == f"--resume needs the arguments of the first run {message}"


# -- the output folder, before any work ---------------------------------------------------------


NO_CHECKPOINT = "with no checkpoint to resume; choose another --out, or empty it to start again"


@pytest.mark.parametrize("markers, says", [
    (["train_log.jsonl"], f"(train_log.jsonl) {NO_CHECKPOINT}"),
    (["checkpoint/trainer_state.json", "train_log.jsonl"],
     "(train_log.jsonl, checkpoint); pass --resume to continue it, or choose another --out"),
    (["model.safetensors"], f"(model.safetensors) {NO_CHECKPOINT}"),
])
def test_a_new_run_into_a_folder_holding_a_run_is_refused(tmp_path, capsys, no_rendering, markers, says):
    out = tmp_path / "run"
    for marker in markers:
        (out / marker).parent.mkdir(parents=True, exist_ok=True)
        (out / marker).write_text("{}")
    assert main(["train", "--out", str(out), "--steps", "3"]) == 2
    assert capsys.readouterr().err == f"minialign train: error: {out} already holds a training run {says}\n"


class Rendered(Exception):
    """The run got past its checks to the first work."""


@pytest.fixture
def stop_at_rendering(monkeypatch):
    def generate(*args, **kwargs):
        raise Rendered

    monkeypatch.setattr(synthetic, "generate", generate)


@pytest.mark.parametrize("leftover", [[], ["vocab.txt", "run_args.json", "notes.txt"]], ids=["empty", "no-run-yet"])
def test_a_folder_without_a_run_is_used(tmp_path, stop_at_rendering, leftover):
    (tmp_path / "run").mkdir()
    for name in leftover:
        (tmp_path / "run" / name).write_text("x")
    with pytest.raises(Rendered):
        recipe.run_training(tmp_path / "run", steps=3)


def test_missing_parents_of_out_are_created(tmp_path, stop_at_rendering):
    with pytest.raises(Rendered):
        recipe.run_training(tmp_path / "a" / "b" / "run", steps=3)
    assert (tmp_path / "a" / "b" / "run").is_dir()


@pytest.mark.parametrize("out", ["file", "file/run"], ids=["a-file", "under-a-file"])
def test_out_that_is_or_lies_under_a_file_is_one_line_exit_2(tmp_path, capsys, no_rendering, out):
    (tmp_path / "file").write_text("not a folder")
    assert main(["train", "--out", str(tmp_path / out), "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / out) in err and "choose another --out" in err
    assert ("is a file, not a directory" if out == "file" else "cannot create --out") in err


@pytest.fixture
def read_only_dir(tmp_path):
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        if os.access(directory, os.W_OK):
            pytest.skip("this user can write to a read-only directory (root): nothing to refuse")
        yield directory
    finally:
        directory.chmod(0o755)


@pytest.mark.parametrize("out, message", [
    ("run", "cannot create --out"),  # a new folder inside the read-only one
    (".", "cannot write to"),  # the read-only folder itself
])
def test_out_in_a_read_only_place_is_one_line_exit_2(read_only_dir, capsys, no_rendering, out, message):
    path = os.path.normpath(read_only_dir / out)
    assert main(["train", "--out", path, "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert err == f"minialign train: error: {message} {path}: Permission denied; choose another --out\n"


def test_resume_of_a_finished_run_prints_nothing_to_do(finished_run, capsys, no_rendering, small_cli_runs):
    assert main(["train", "--out", str(finished_run), *small_cli_runs, "--resume"]) == 0
    assert capsys.readouterr().out == f"already trained to step 4; nothing to do (model in {finished_run})\n"
