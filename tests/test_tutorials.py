"""Every tutorial runs top to bottom (as a student would, cell after cell), and prints what its docs page shows.

The site's tutorial pages show each cell's output from a committed capture
(``tutorials/outputs/NN_name.json``, written by ``python docs/hooks/tutorials.py capture NN``; see
that hook's docstring for why the build does not run them). Here each tutorial runs cell by cell
and its output is compared with the capture, so a change to the library that changes what a
tutorial prints fails here until the capture is retaken.
"""

import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
_spec = importlib.util.spec_from_file_location("tutorial_pages", ROOT / "docs" / "hooks" / "tutorials.py")
pages = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = pages  # dataclasses look their module up there
_spec.loader.exec_module(pages)

TUTORIALS = pages.tutorial_paths()


def test_there_are_tutorials():
    assert TUTORIALS


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_runs(path, monkeypatch):
    monkeypatch.setenv("MINIALIGN_TUTORIAL_FAST", "1")  # tutorials that train take their short road
    if path.name in pages.COMPILES_FOR_A_GPU:
        # Compiling for a GPU target needs a Python that imported Triton without
        # TRITON_INTERPRET=1, which conftest sets for this process: a child runs it.
        pytest.importorskip("triton", reason="the kernel lab needs the [gpu] extra")
        outputs = pages.run_in_child(path, fast=True)
    else:
        outputs = pages.run_cells(path)
    assert "".join(outputs).strip()  # it shows the student something

    record = pages.load_capture(path)  # raises, naming the command, when missing or stale
    if record["mode"] == "full":
        return  # the page shows the full run; this was the fast road, which prints other numbers
    for n, (fresh, committed) in enumerate(zip(outputs, record["cells"])):
        difference = pages.outputs_agree(fresh, committed, numbers=path.name not in pages.NUMBERS_VARY)
        assert difference is None, (
            f"{path.name}, code cell {n + 1}, no longer prints what its page shows: {difference}. "
            f"Rerun `python docs/hooks/tutorials.py capture {path.name[:2]}` and commit the capture.")


def test_outputs_agree_tolerates_rounding_not_changes():
    assert pages.outputs_agree("max error 4.8e-07\nok\n", "max error 5.9e-07\nok\n") is None
    assert "46.6" in pages.outputs_agree("46.6%  blue circle", "52.1%  blue circle")
    assert "line 1" in pages.outputs_agree("46.6%  blue square", "46.6%  blue circle")
    assert pages.outputs_agree("took 1.7 s", "took 2.9 s", numbers=False) is None


def test_split_cells_reads_the_percent_format():
    cells = pages.split_cells("# %% [markdown]\n# # Title\n#\n# Prose.\n\n# %%\nx = 1\n\nprint(x)\n\n# %%\n")
    assert [(c.kind, c.source, c.line) for c in cells] == [("markdown", "# Title\n\nProse.", 1),
                                                          ("code", "x = 1\n\nprint(x)", 6)]


def test_each_tutorial_page_and_notebook_follow_its_cells():
    """The generated page has every code cell, each followed by its captured output; the notebook
    is nbformat 4 with the same cells in order and the output as a stdout stream."""
    for path in TUTORIALS:
        record = pages.load_capture(path)
        cells = pages.split_cells(path.read_text(encoding="utf-8"))
        code = [c for c in cells if c.kind == "code"]
        page = pages.page_markdown(path, record)
        assert f"({path.stem}.ipynb)" in page
        for cell, out in zip(code, record["cells"]):
            assert cell.source in page
            if out.strip():
                assert out.rstrip("\n") in page
        notebook = pages.notebook(path, record)
        assert (notebook["nbformat"], notebook["nbformat_minor"]) == (4, 4)
        assert [c["cell_type"] for c in notebook["cells"]] == [c.kind for c in cells]
        for nb_cell, cell in zip(notebook["cells"], cells):
            assert "".join(nb_cell["source"]) == cell.source
        streams = ["".join(o["text"]) for c in notebook["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
        assert streams == [out for out in record["cells"] if out]
