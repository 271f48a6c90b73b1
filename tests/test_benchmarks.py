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


def test_numpy_backend_benchmark_dry_run(tmp_path):
    """benchmarks/numpy_backend.py --dry-run: every case's fast op matches the reference op on tiny
    shapes, nothing is timed, and OPENBLAS_THREAD_TIMEOUT is set by the script when unset."""
    out = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    script = os.path.join(ROOT, "benchmarks", "numpy_backend.py")
    done = subprocess.run([sys.executable, script, "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True
    assert result["openblas_thread_timeout"]["value"] == "16"
    assert result["openblas_thread_timeout"]["set_by"].startswith("benchmark")
    ops = {case["op"] for case in result["cases"]}
    assert {"depthwise_conv2d", "bias_act", "gelu", "linear", "pointwise_conv", "conv2d"} <= ops
    assert all(case["reference"] is None and case["max_abs_diff"] <= 1e-4 for case in result["cases"])

    # The docstring's table, from a result with timings (made up here; only the layout is checked).
    for case in result["cases"]:
        case["reference"], case["numpy"] = {"median_s": 0.02}, {"median_s": 0.005}
        case["speedup"] = {"median": 4.0}
    result["repeats"] = 15
    out.write_text(json.dumps(result))
    table = subprocess.run([sys.executable, script, "--table", str(out)], capture_output=True, text=True,
                           env=env, timeout=600)
    assert table.returncode == 0, table.stderr[-3000:]
    lines = table.stdout.splitlines()
    assert lines[0] == "| op | shape | reference ms | numpy ms | speed-up |"
    assert "| ``gelu`` | [4096, 3072] | 20.0 | 5.0 | 4.0x |" in lines
