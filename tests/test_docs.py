"""The docs site builds strictly, and the generated block table is up to date."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _require_mkdocs() -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs-material is a dev dependency")


def test_mkdocs_build_strict(tmp_path):
    _require_mkdocs()
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (site / "index.html").is_file()


def test_block_table_is_up_to_date():
    spec = importlib.util.spec_from_file_location("gen_block_table", ROOT / "docs" / "gen_block_table.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    committed = (ROOT / "docs" / "block_table.md").read_text(encoding="utf-8")
    assert gen.render() == committed, "docs/block_table.md is stale: run `python docs/gen_block_table.py`"


def test_attention_map_figure_is_up_to_date(tmp_path):
    """docs/figures/attention_map.svg is what docs/figures/attention_map.py writes (from the
    embedded align-nano model); the script shows whole percentages, so float32 rounding noise
    in the attention does not change the file."""
    script = ROOT / "docs" / "figures" / "attention_map.py"
    result = subprocess.run(
        [sys.executable, str(script), "--out-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
    committed = (ROOT / "docs" / "figures" / "attention_map.svg").read_text(encoding="utf-8")
    assert (tmp_path / "attention_map.svg").read_text(encoding="utf-8") == committed, (
        "docs/figures/attention_map.svg is stale: run `python docs/figures/attention_map.py`"
    )
