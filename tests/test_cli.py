"""The minialign command: output formats, exit codes, one-line errors."""

import json

import numpy as np
import pytest
from PIL import Image

import reference
from minialign.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli-model")
    reference.tiny_align_checkpoint(directory, seed=2)
    return str(directory)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_classify_human_and_json(checkpoint, image, capsys):
    assert main(["classify", image, "--labels", "dog", "cat", "red car", "--model", checkpoint]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == image and len(out) == 4 and out[1].strip().endswith(("dog", "cat", "red car"))
    assert main(["classify", image, image, "--labels", "dog", "cat", "--model", checkpoint, "--json",
                 "--template", "a {}", "--template", "the {}"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["image"] for d in data] == [image, image]
    scores = [r["score"] for r in data[0]["results"]]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5


def test_bench_prints_every_stage(checkpoint, capsys):
    assert main(["bench", "--model", checkpoint, "--num-labels", "3", "--repeats", "1", "--json"]) == 0
    seconds = json.loads(capsys.readouterr().out)["seconds"]
    assert set(seconds) == {"tokenize", "preprocess image", "text tower", "vision tower", "total"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["classify", "missing.png", "--labels", "dog"], "missing.png"),
        (["classify", "IMAGE", "--labels", "dog", "--template", "no placeholder"], "must be a string containing '{}'"),
        (["classify", "IMAGE", "--labels", "dog", "--model", "/nonexistent/model"], "model directory not found"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(checkpoint, image, capsys, argv, message):
    argv = [image if a == "IMAGE" else a for a in argv]
    if "--model" not in argv:
        argv += ["--model", checkpoint]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and err.startswith("minialign classify: error:")


def test_bad_arguments_exit_2(checkpoint, capsys):
    assert main(["classify", "x.png", "--model", checkpoint]) == 2  # no --labels
    assert "no --labels given, and the model" in capsys.readouterr().err
    for argv, message in ((["classify", "--top", "many"], "argument --top: must be an integer, got 'many'"),
                          (["classify", "--top", "0"], "argument --top: must be at least 1, got 0"),
                          (["classify", "--top", "-1"], "argument --top: must be at least 1, got -1"),
                          (["embed", "folder", "--out", "x", "--batch-size", "0"], "--batch-size: must be at least 1"),
                          (["bench", "--num-labels", "0"], "--num-labels: must be at least 1, got 0"),
                          (["search", "index", "q", "-k", "0"], "argument -k: must be at least 1, got 0"),
                          (["nope"], "invalid choice: 'nope'")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)


def test_checkpoint_errors_keep_every_key_on_one_line(checkpoint, image, tmp_path, capsys):
    import shutil

    from safetensors.numpy import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    state = load_file(broken / "model.safetensors")
    del state["text_projection.bias"]
    state["extra.weight"] = np.zeros(3, np.float32)
    save_file(state, broken / "model.safetensors")
    assert main(["classify", image, "--labels", "dog", "--model", str(broken)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "text_projection.bias: expected (32,)" in err and "extra.weight: found (3,)" in err


def test_parity_exit_codes(checkpoint, tmp_path, capsys):
    assert main(["parity", "--model", checkpoint]) == 0
    out = capsys.readouterr().out
    assert "text.layer.0" in out and "vision.block.0" in out and "within tolerance" in out
    assert main(["parity", "--model", checkpoint, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_embed_then_search(checkpoint, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ["a.png", "b.jpg", "sub/c.png"]:
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.png").write_text("not an image")
    index = tmp_path / "photos.safetensors"
    assert main(["embed", str(folder), "--out", str(index), "--model", checkpoint, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["embedded"] == 3 and len(report["failed"]) == 1 and "broken.png" in report["failed"][0][0]
    assert main(["search", str(index), "a red car", "-k", "2", "--model", checkpoint, "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 2 and {h["path"] for h in hits} <= {"a.png", "b.jpg", "sub/c.png"}
    assert main(["search", str(index), str(folder / "b.jpg"), "--image", "-k", "1", "--model", checkpoint]) == 0
    assert capsys.readouterr().out.split()[1] in {"a.png", "b.jpg", "sub/c.png"}
    index.write_bytes(b"garbage")
    assert main(["search", str(index), "dog", "--model", checkpoint]) == 2
    assert "photos.safetensors" in capsys.readouterr().err


def test_import_minialign_loads_no_numpy_and_the_command_tunes_openblas_first():
    """`import minialign` is lazy, so the `minialign` command (minialign.__main__) runs before
    NumPy loads and can set OPENBLAS_THREAD_TIMEOUT; a library import leaves the environment alone."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    code = ("import os, sys, minialign\n"
            "assert 'numpy' not in sys.modules, 'import minialign loaded numpy'\n"
            "assert 'OPENBLAS_THREAD_TIMEOUT' not in os.environ\n"
            "from minialign.__main__ import main\n"
            "sys.argv = ['minialign', '--version']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(os.environ['OPENBLAS_THREAD_TIMEOUT'])\n")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "16"


def test_max_image_pixels_sets_pillows_bomb_limit_for_one_command(checkpoint, tmp_path, capsys):
    from PIL import Image as PILImage

    path = tmp_path / "big.png"
    PILImage.fromarray(np.zeros((40, 60, 3), np.uint8)).save(path)  # 2,400 pixels
    limit = PILImage.MAX_IMAGE_PIXELS
    assert main(["classify", str(path), "--labels", "a", "b", "--model", checkpoint, "--max-image-pixels", "1000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "big.png" in err and "--max-image-pixels N" in err  # over 2 x 1,000: refused
    assert main(["classify", str(path), "--labels", "a", "b", "--model", checkpoint, "--max-image-pixels", "2000"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ": warning: " in err and "big.png" in err  # over 2,000, under 4,000: read, said
    assert PILImage.MAX_IMAGE_PIXELS == limit  # restored for whatever runs next in the process


def test_the_triton_backend_without_torch_is_one_line_naming_the_install(checkpoint, image, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails, as on a plain `pip install .`
    monkeypatch.delitem(sys.modules, "minialign.backends.triton", raising=False)
    assert main(["classify", image, "--labels", "a", "b", "--model", checkpoint, "--backend", "triton"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs torch and triton (torch is not installed)" in err and "[gpu]" in err


def test_every_option_of_every_command_is_described(capsys):
    from minialign.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in {"minialign": parser, **commands}.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    for argv in (["--help"], ["--version"], *([name, "--help"] for name in commands)):
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "minialign 0.1.0" in out and "(default: 0.3)" in out and "needs minialign" not in out
