"""MkDocs hook: every tutorial in ``tutorials/`` becomes a page of the site, with what it printed, and a notebook.

A tutorial is a ``# %%`` percent-format script: ``# %% [markdown]`` opens a cell of prose (each
line a comment), ``# %%`` a cell of code. For ``tutorials/NN_name.py`` the build adds

    tutorials/NN_name/              the page: the prose as Markdown, each code cell, and under it
                                    the text that cell printed
    tutorials/NN_name.ipynb         the same cells as a Jupyter notebook (nbformat 4), outputs included

The pages are listed under "Tutorials" in ``mkdocs.yml``'s nav (a new tutorial without a nav
entry fails ``mkdocs build --strict``).

Where the printed text comes from (the decision, and why)
--------------------------------------------------------
Running the tutorials at build time would show their output fresh, but the site is built several
times per CI run (``tests/test_docs.py``, ``tests/test_site.py``) and CI's time is tight: tutorial
07 trains a model for about 8 minutes and tutorial 08 compiles kernels for a GPU. So the output is
*captured*, once, by running the tutorial cell by cell as CI runs it, and committed next to it:

    tutorials/outputs/NN_name.json  {"source_sha256": ..., "mode": "fast" | "full", "cells": [text, ...]}

    python docs/hooks/tutorials.py capture              # every tutorial, about a minute
    python docs/hooks/tutorials.py capture 01 09        # some, by number

Two checks keep a capture from going stale:

- the build fails (a ``PluginError``, so ``mkdocs build`` stops, strict or not) when a tutorial has
  no capture, or its capture was taken from other source (the SHA-256 of the ``.py`` differs);
- ``tests/test_tutorials.py`` runs every tutorial cell by cell, as CI always has, and compares each
  cell's output with the capture (``outputs_agree``: the words exactly, the numbers to a loose
  tolerance, since a max error of 5e-7 moves with the BLAS build), so a change in the library
  that changes what a tutorial prints fails there too.

Tutorial 07 is captured, like the others, on the 3-step road CI takes (``MINIALIGN_TUTORIAL_FAST=1``):
its page says so and points to the full run's committed log and result
(``benchmarks/results/tutorial_07/``, quoted and tested on the training page). It prints its own
wall-clock time, so its numbers are not compared, only its words (``NUMBERS_VARY``). A tutorial
listed in ``FULL_RUN`` instead has its page show the full run (``mode: "full"``, captured without
``MINIALIGN_TUTORIAL_FAST``), tied to its source by the hash only, since CI cannot rerun it:
adding 07 there costs an 8-minute capture on a quiet 2-core machine.

Paths in the output are written relative to the repository root, and temporary folders as
``<tmp>/...``, so a capture does not depend on where it was taken.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = ROOT / "tutorials"
CAPTURES = TUTORIALS / "outputs"
FULL_RUN: set[str] = set()  # pages that show the full run rather than CI's fast road (see above)
NUMBERS_VARY = {"07_training_a_tiny_align.py"}  # prints its own timing: words compared, not numbers
# Compiled for a GPU target: needs a Python where Triton was imported without TRITON_INTERPRET=1.
COMPILES_FOR_A_GPU = {"08_the_kernel_lab.py"}
SITE_DIR = "tutorials"


@dataclass
class Cell:
    kind: str  # "markdown" or "code"
    source: str  # the cell's text: Markdown without the comment marks, or Python
    line: int  # 0-based line of the file where the cell's text starts


def tutorial_paths() -> list[Path]:
    return sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))


def split_cells(text: str) -> list[Cell]:
    """The cells of a percent-format script, in order; blank lines around a cell are dropped."""
    cells: list[Cell] = []
    kind, start, body = None, 0, []

    def close():
        if kind is None:
            return
        lines = list(body)
        first = start
        while lines and not lines[0].strip():
            lines.pop(0)
            first += 1
        while lines and not lines[-1].strip():
            lines.pop()
        if kind == "markdown":
            lines = [re.sub(r"^# ?", "", line) for line in lines]
        if lines:
            cells.append(Cell(kind, "\n".join(lines), first))

    for n, line in enumerate(text.splitlines()):
        if line.startswith("# %%"):
            close()
            kind = "markdown" if "[markdown]" in line else "code"
            start, body = n + 1, []
        elif kind is not None:
            body.append(line)
    close()
    return cells


def _normalise(text: str) -> str:
    """Output that does not depend on where it ran: the repository as ".", temporary folders as <tmp>."""
    text = text.replace(str(ROOT) + os.sep, "").replace(str(ROOT), ".")
    return re.sub(re.escape(tempfile.gettempdir()) + r"/[^\s/'\",)]+", "<tmp>", text)


def run_cells(path: Path) -> list[str]:
    """Run a tutorial's code cells in order in one namespace; what each printed, normalised.

    Each cell is compiled under the tutorial's file name at its own line numbers, so tracebacks
    point into the file and ``inspect.getsource`` works (``@triton.jit`` reads the source).
    """
    namespace = {"__name__": "__main__", "__file__": str(path)}
    outputs = []
    for cell in split_cells(path.read_text(encoding="utf-8")):
        if cell.kind != "code":
            continue
        code = compile("\n" * cell.line + cell.source + "\n", str(path), "exec")
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(code, namespace)  # noqa: S102 - running the tutorial is the point
        outputs.append(_normalise(buffer.getvalue()))
    return outputs


def run_in_child(path: Path, fast: bool) -> list[str]:
    """``run_cells`` in a fresh Python, set up as tests/test_tutorials.py runs it: Triton's CPU
    interpreter on (tests/conftest.py), except for a tutorial that compiles for a GPU target."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "MINIALIGN_TUTORIAL_FAST")}
    if path.name not in COMPILES_FOR_A_GPU:
        env["TRITON_INTERPRET"] = "1"
    if fast:
        env["MINIALIGN_TUTORIAL_FAST"] = "1"
    done = subprocess.run([sys.executable, __file__, "run", str(path)], env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{path.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def source_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def capture_path(path: Path) -> Path:
    return CAPTURES / f"{path.stem}.json"


def capture(path: Path) -> dict:
    """Run a tutorial as its page shows it (CI's road, or the full run for FULL_RUN) and write its capture."""
    mode = "full" if path.name in FULL_RUN else "fast"
    outputs = run_in_child(path, fast=mode == "fast")
    record = {"source_sha256": source_sha256(path), "mode": mode, "cells": outputs}
    CAPTURES.mkdir(exist_ok=True)
    capture_path(path).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return record


class StaleCapture(Exception):
    pass


def load_capture(path: Path) -> dict:
    """The committed capture of a tutorial; StaleCapture when it is missing or from other source."""
    rerun = f"run `python docs/hooks/tutorials.py capture {path.name[:2]}`"
    file = capture_path(path)
    if not file.is_file():
        raise StaleCapture(f"{path.name} has no captured output ({file.relative_to(ROOT)} is missing): {rerun}")
    record = json.loads(file.read_text(encoding="utf-8"))
    if record.get("source_sha256") != source_sha256(path):
        raise StaleCapture(f"{file.relative_to(ROOT)} was captured from another version of {path.name}: {rerun}")
    expected = "full" if path.name in FULL_RUN else "fast"
    if record.get("mode") != expected:
        raise StaleCapture(f"{file.relative_to(ROOT)} is of a {record.get('mode')} run, its page shows a {expected} "
                           f"one: {rerun}")
    n_code = sum(cell.kind == "code" for cell in split_cells(path.read_text(encoding="utf-8")))
    if len(record.get("cells", [])) != n_code:
        raise StaleCapture(f"{file.relative_to(ROOT)} has {len(record.get('cells', []))} outputs for "
                           f"{n_code} code cells: {rerun}")
    return record


NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def outputs_agree(fresh: str, committed: str, rel: float = 5e-3, abs_: float = 1e-5,
                  numbers: bool = True) -> str | None:
    """None when two outputs say the same thing; else the first difference, in words.

    The text between numbers must match exactly; each number within ``abs_ + rel * |committed|``
    (a max error of 4.8e-07 on one machine is 5.9e-07 on another; a score of 46.6% is not 52%),
    unless ``numbers`` is False (an output that prints timings).
    """
    words_f, words_c = NUMBER.split(fresh), NUMBER.split(committed)
    nums_f, nums_c = NUMBER.findall(fresh), NUMBER.findall(committed)
    if words_f != words_c or len(nums_f) != len(nums_c):
        for n, (a, b) in enumerate(zip(fresh.splitlines(), committed.splitlines())):
            if NUMBER.sub("#", a) != NUMBER.sub("#", b):
                return f"line {n + 1}: printed {a!r}, the capture has {b!r}"
        return f"printed {len(fresh.splitlines())} lines, the capture has {len(committed.splitlines())}"
    for a, b in zip(nums_f, nums_c) if numbers else ():
        x, y = float(a), float(b)
        if not (math.isclose(x, y, rel_tol=rel, abs_tol=abs_)):
            return f"printed {a} where the capture has {b}"
    return None


# ---- the page and the notebook ---------------------------------------------------------------------

def page_markdown(path: Path, record: dict) -> str:
    cells = split_cells(path.read_text(encoding="utf-8"))
    outputs = iter(record["cells"])
    how = {"full": "the full run (CI takes its short road, `MINIALIGN_TUTORIAL_FAST=1`)",
           "fast": "a run as CI runs it"}[record["mode"]]
    if record["mode"] == "fast" and "MINIALIGN_TUTORIAL_FAST" in path.read_text(encoding="utf-8"):
        how += (" (`MINIALIGN_TUTORIAL_FAST=1`: the short road, which checks that every line runs; the full run's "
                "numbers are on the [training page](../training.md#the-tutorials-size))")
    banner = (f'!!! info "Run it yourself"\n'
              f"    Source: `tutorials/{path.name}` (`python tutorials/{path.name}`), or "
              f"[download it as a notebook]({path.stem}.ipynb). The output under each cell is what it printed in "
              f"{how}, captured by `docs/hooks/tutorials.py` and checked against the source on every build.\n")
    parts: list[str] = []
    for n, cell in enumerate(cells):
        if cell.kind == "markdown":
            parts.append(cell.source)
        else:
            parts.append('``` { .python .tutorial-code }\n' + cell.source + '\n```')
            out = next(outputs).rstrip("\n")
            if out:
                parts.append('``` { .text .tutorial-output title="output" }\n' + out + '\n```')
        if n == 0:
            parts.append(banner)
    return "\n\n".join(parts) + "\n"


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    return lines


def notebook(path: Path, record: dict) -> dict:
    """The tutorial as an nbformat 4 notebook, each code cell with its captured stdout."""
    cells, outputs, count = [], iter(record["cells"]), 0
    for cell in split_cells(path.read_text(encoding="utf-8")):
        if cell.kind == "markdown":
            cells.append({"cell_type": "markdown", "metadata": {}, "source": _lines(cell.source)})
            continue
        count += 1
        out = next(outputs)
        cells.append({"cell_type": "code", "execution_count": count, "metadata": {}, "source": _lines(cell.source),
                      "outputs": [{"output_type": "stream", "name": "stdout", "text": _lines(out)}] if out else []})
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 4,
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"}}}


def on_files(files, config):
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    for path in tutorial_paths():
        try:
            record = load_capture(path)
        except StaleCapture as e:
            raise PluginError(str(e)) from None
        files.append(File.generated(config, f"{SITE_DIR}/{path.stem}.md", content=page_markdown(path, record)))
        files.append(File.generated(config, f"{SITE_DIR}/{path.stem}.ipynb",
                                    content=json.dumps(notebook(path, record), indent=1, ensure_ascii=False) + "\n"))
    return files


def _select(names: list[str]) -> list[Path]:
    paths = tutorial_paths()
    if not names:
        return paths
    chosen = [p for p in paths if any(p.name.startswith(n) for n in names)]
    unknown = [n for n in names if not any(p.name.startswith(n) for p in paths)]
    if unknown:
        raise SystemExit(f"no tutorial starts with {', '.join(unknown)} (tutorials/: {[p.name for p in paths]})")
    return chosen


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "run":
        print(json.dumps(run_cells(Path(argv[1]).resolve())))
        return 0
    if argv and argv[0] == "capture":
        for path in _select(argv[1:]):
            record = capture(path)
            print(f"{capture_path(path).relative_to(ROOT)}: {len(record['cells'])} cells ({record['mode']} run)")
        return 0
    print("usage: python docs/hooks/tutorials.py capture [NN ...] | run tutorials/NN_name.py", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))
