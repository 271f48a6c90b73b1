"""Every tutorial runs top to bottom (as a student would, cell after cell)."""

import os
import pathlib
import runpy
import subprocess
import sys

import pytest

TUTORIALS = sorted((pathlib.Path(__file__).parent.parent / "tutorials").glob("[0-9][0-9]_*.py"))
# Tutorials that compile for a GPU (the kernel lab) need a Python that imported Triton without
# TRITON_INTERPRET=1, which conftest sets for this process: they run in a child without it.
COMPILES_FOR_A_GPU = {"08_the_kernel_lab.py"}


def test_there_are_tutorials():
    assert TUTORIALS


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_runs(path, capsys, monkeypatch):
    monkeypatch.setenv("MINIALIGN_TUTORIAL_FAST", "1")  # tutorials that train take their short road
    if path.name in COMPILES_FOR_A_GPU:
        pytest.importorskip("triton", reason="the kernel lab needs the [gpu] extra")
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        done = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip()
        return
    runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out.strip()  # it shows the student something
