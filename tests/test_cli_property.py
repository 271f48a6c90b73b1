"""The command line under hypothesis-drawn argument lists: every one ends in exit 0 or 2, with
one error line for 2, and never in a traceback (an exception escaping ``main`` fails the test).

The arguments are drawn from what a user types: each subcommand's real options and a few it does
not have, with values that are right, wrong or odd (negative, zero, NaN, empty, a missing file,
a folder where a file belongs, a text file posing as an image, unicode).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import reference
from minialign.cli import main
from minialign.training import recipe

OPTIONS = {  # subcommand -> the options it has (and --json, --help for all)
    "classify": ["--labels", "--template", "--top", "--model", "--backend", "--dtype"],
    "embed": ["--out", "--batch-size", "--model", "--backend"],
    "search": ["-k", "--image", "--force", "--model", "--backend"],
    "parity": ["--model"],
    "bench": ["--num-labels", "--repeats", "--model"],
    "train": ["--steps", "--out", "--batch-size", "--lr", "--weight-decay", "--seed", "--eval-every", "--config",
              "--resume"],
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-property")
    model = root / "model"
    reference.tiny_align_checkpoint(model, seed=3)
    photos = root / "photos"
    photos.mkdir()
    for i, size in enumerate([(40, 60), (33, 33)]):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    (root / "notes.png").write_text("not an image")
    assert main(["embed", str(photos), "--out", str(root / "index.safetensors"), "--model", str(model)]) == 0
    return {"MODEL": str(model), "IMAGE": str(photos / "p0.png"), "FOLDER": str(photos), "TEXT_AS_PNG": str(root / "notes.png"),
            "INDEX": str(root / "index.safetensors"), "MISSING": str(root / "missing.png"), "OUT": str(root / "out")}


ODD = ["0", "-1", "3.5", "nan", "inf", "", " ", "many", "ünïcode ☃", "--", "-", "MISSING", "FOLDER", "TEXT_AS_PNG"]
PATHS = ["IMAGE", "FOLDER", "INDEX", "MISSING", "TEXT_AS_PNG", "OUT", "MODEL"]
POSITIONALS = {"classify": ["IMAGE", "IMAGE", "MISSING", "TEXT_AS_PNG", "FOLDER"], "embed": ["FOLDER", "IMAGE", "MISSING"],
               "search": ["INDEX", "FOLDER", "MISSING"], "parity": [], "bench": [], "train": []}
PLAUSIBLE = {  # option -> values a user would plausibly give
    "--labels": ["cat", "red circle", "dog"], "--template": ["a photo of {}.", "no placeholder"], "--top": ["1", "2"],
    "--model": ["MODEL", "MODEL", "MISSING"], "--backend": ["numpy", "reference", "triton"],
    "--dtype": ["float32", "bfloat16"], "--out": ["OUT", "FOLDER", "MISSING/x.safetensors"], "--batch-size": ["1", "2"],
    "-k": ["1", "3"], "--num-labels": ["1", "2"], "--repeats": ["1"], "--steps": ["1", "5"], "--lr": ["0.001", "1"],
    "--weight-decay": ["0", "0.3"], "--seed": ["0", "7"], "--eval-every": ["0", "10"], "--config": ["nano", "huge"],
}
FLAGS = {"--json", "--image", "--force", "--resume"}


@st.composite
def command_lines(draw):
    """A subcommand, its positionals (right or wrong), then options each with a plausible or odd value."""
    command = draw(st.sampled_from(sorted(OPTIONS)))
    argv = [command]
    positionals = POSITIONALS[command] and [draw(st.sampled_from(POSITIONALS[command]))]
    if command == "search":
        positionals.append(draw(st.sampled_from(["red circle", "", "   ", "IMAGE"])))
    argv += draw(st.sampled_from([positionals, positionals, positionals[:1], []]))
    for _ in range(draw(st.integers(0, 5))):
        option = draw(st.sampled_from(OPTIONS[command] + ["--json", "--top", "--nope"]))
        argv.append(option)
        if option not in FLAGS:
            odd = draw(st.integers(0, 4)) == 0
            argv.append(draw(st.sampled_from(ODD if odd or option not in PLAUSIBLE else PLAUSIBLE[option])))
    return argv


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=command_lines())
def test_any_command_line_exits_0_or_2_with_one_error_line(files, argv, capsys, monkeypatch, tmp_path):
    # A real training run renders 10,000 images first (tests/test_train.py runs it); here the
    # recipe only checks its arguments, as it does before any work.
    def check_only(out, *, config, steps, batch_size, lr, seed, eval_every, weight_decay, **_):
        recipe._check_run_args(config, steps, batch_size, lr, weight_decay, seed, eval_every, recipe.TRAIN_EXAMPLES)
        return {"out_dir": str(out), "steps": steps, "resumed_from": None, "final_loss": None, "eval": None,
                "seconds": 0.0}

    monkeypatch.setattr(recipe, "run_training", check_only)
    files = {**files, "OUT": str(tmp_path / "out")}  # a fresh output path per example
    argv = [files.get(a, a).replace("MISSING/", files["MISSING"] + "/") for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, code, err)
    lines = [line for line in err.splitlines() if line and ": warning: " not in line]
    if code == 2:
        assert len(lines) == 1 and ": error: " in lines[0], (argv, err)
    else:
        assert not lines, (argv, err)
