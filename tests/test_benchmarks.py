"""The GPU benchmark scripts run end to end on Triton's CPU interpreter (--dry-run), so a session
with a lent GPU -- 15 minutes, all tries together -- does not spend them on a script error."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.mark.parametrize("script", ["gpu_align.py"])
def test_gpu_benchmark_dry_run(script, tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True
    # Nothing is timed on the interpreter, but the correctness checks ran (tiny config).
    assert all(v["timing"] is None for task in ("vision", "text_padded_64", "text_captions") for v in result[task].values())
    assert result["float32_vs_transformers_max_abs"]["image_embeds"] <= 1e-4
    assert result["float32_vs_transformers_max_abs"]["text_embeds"] <= 1e-4
