"""Every tutorial runs top to bottom (as a student would, cell after cell)."""

import pathlib
import runpy

import pytest

TUTORIALS = sorted((pathlib.Path(__file__).parent.parent / "tutorials").glob("[0-9][0-9]_*.py"))


def test_there_are_tutorials():
    assert TUTORIALS


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_runs(path, capsys, monkeypatch):
    monkeypatch.setenv("MINIALIGN_TUTORIAL_FAST", "1")  # tutorials that train take their short road
    runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out.strip()  # it shows the student something
