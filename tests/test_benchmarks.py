"""The GPU benchmark scripts run end to end on Triton's CPU interpreter (--dry-run), so a session
with a lent GPU -- 15 minutes, all tries together -- does not spend them on a script error."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _dry_run(script: str, tmp_path, *args: str, interpret: bool = True) -> dict:
    out = tmp_path / "result.json"
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--dry-run", *args, "--out",
                           str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True
    return result


def test_gpu_speed_benchmark_dry_run(tmp_path):
    """Step 2 of run_gpu.sh: nothing is timed on the interpreter, every candidate ran once."""
    result = _dry_run("gpu_align.py", tmp_path)
    tasks = ("vision", "vision_small_batch", "text_padded_64", "text_captions")
    assert all(v["timing"] is None for task in tasks for v in result[task].values())


def test_gpu_correctness_dry_run(tmp_path):
    """Step 1 of run_gpu.sh on a tiny config: float32 against transformers, within the target."""
    result = _dry_run("gpu_correctness.py", tmp_path)
    assert result["tf32"] is False
    assert result["float32_vs_transformers_max_abs"]["image_embeds"] <= 1e-4
    assert result["float32_vs_transformers_max_abs"]["text_embeds"] <= 1e-4
    assert result["all_within_targets"] is True


def test_host_overhead_dry_run(tmp_path):
    """benchmarks/host_overhead.py on small shapes: align-base's launches per forward, before and
    after the weights were prepared once (the counts do not depend on the shapes: 55 blocks, 51
    with an expansion; see tests/test_launches.py for what each is)."""
    result = _dry_run("host_overhead.py", tmp_path, interpret=False)
    launches = result["launches_per_forward"]
    assert launches["vision"]["triton"] == launches["vision_per_forward_constants"]["triton"] == 4 * 51 + 3 * 4
    # input copy, stem conv, SiLU, mean + the stem's output copy on meta tensors; nothing per block
    assert launches["vision"]["torch_ops"] == {"clone": 2, "convolution": 1, "silu_": 1, "mean": 1}
    assert launches["vision_per_forward_constants"]["torch"] > 5 * 55
    assert launches["graph_replay_bookkeeping"] == {"triton": 0, "torch": 3, "torch_ops": {"clone": 2, "copy_": 1}}
    assert all(ms > 0 for ms in result["host_ms_per_forward"].values())


def test_backends_page_shows_the_committed_host_overhead():
    """docs/backends.md's table is what host_overhead.py --table prints for the committed result."""
    results = os.path.join(ROOT, "benchmarks", "results", "host_overhead_cpu.json")
    table = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "host_overhead.py"), "--table", results],
                           capture_output=True, text=True, check=True).stdout
    with open(os.path.join(ROOT, "docs", "backends.md"), encoding="utf-8") as fh:
        assert table.strip() in fh.read(), "rerun host_overhead.py --table and paste it into docs/backends.md"
    with open(results, encoding="utf-8") as fh:
        assert json.load(fh)["dry_run"] is False


def test_warm_cache_compiles_what_the_jit_will_look_up():
    """benchmarks/warm_triton_cache.py compiles each specialisation with the four options the
    kernel lab records; the JIT compiles with every option it parsed. Triton's cache finds the
    warm-up's result only if both give the same cache key: checked here for a GEMM launch, in a
    process without the interpreter (which replaces the compiler)."""
    code = """
import json
import torch, triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler.compiler import get_cache_key, make_backend
from triton.runtime.driver import driver
from triton.runtime.jit import get_cache_invalidating_env_vars
from minialign.kernels import plan
from minialign.kernels._checks import planning
from minialign.kernels.gemm import gemm

a = torch.empty(256, 64, dtype=torch.bfloat16, device="meta")
w = torch.empty(128, 64, dtype=torch.bfloat16, device="meta")
jit = []
previous = driver._active
driver.set_active(plan._PlanningDriver(90))
knobs.runtime.jit_cache_hook = lambda *, fn, compile, **_: jit.append((fn.jit_function, compile)) or True
with planning():
    gemm(a, w, activation="silu")
driver._active, knobs.runtime.jit_cache_hook = previous, None
launches = []
with plan.recording("sm_90a", launches, ["test"]):
    gemm(a, w, activation="silu")
fn, compile = jit[0]
jit_options = {k: tuple(v) if isinstance(v, list) else v  # JSON made its tuples lists
               for k, v in json.loads(compile["specialization_data"])["options"].items()}
launch = launches[0]
backend = make_backend(GPUTarget("cuda", 90, 32))
source = triton.compiler.ASTSource(fn, launch.signature, launch.constexprs, launch.attrs)
keys = [get_cache_key(source, backend, backend.parse_options(o), get_cache_invalidating_env_vars())
        for o in (jit_options, launch.options)]
print(keys[0] == keys[1])
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "True"


def test_run_gpu_sh_refuses_clearly(tmp_path):
    """run_gpu.sh: an unknown step, or a GPU step without CUDA, is one line on stderr and exit 2."""
    script = os.path.join(ROOT, "benchmarks", "run_gpu.sh")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    bad = subprocess.run(["bash", script, "benchmark"], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "unknown step 'benchmark'" in bad.stderr and bad.stderr.count("\n") == 1
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    for step in ("setup", "correctness", "speed", "kernels", "extra", "all"):
        done = subprocess.run(["bash", script, step], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 2, step
        assert done.stderr == f"run_gpu.sh {step}: no CUDA GPU here (torch.cuda.is_available() is False); use --dry-run " \
                              "to check the scripts on the CPU\n"


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
