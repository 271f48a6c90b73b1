"""The kernel lab (minialign/kernels/plan.py and report.py, `minialign kernels report`).

What CI checks without a GPU: every specialisation one align-base forward launches compiles for
sm_90a (H100) and sm_80 (A100), in bfloat16 and float32, and the bfloat16 ones -- the production
configurations -- and every GEMM spill no register; every GEMM is priced against the same GEMM
without its epilogue; the batchnorm kernel, which the model does not launch,
compiles too (the report carries it); the byte and FLOP counts of the roofline equal a hand count; the committed report
(benchmarks/results/kernel_report.json, the docs' numbers) is what this Triton compiles today.

Compiling needs a process that imported Triton without TRITON_INTERPRET=1 (conftest sets it for
the kernels' interpreter tests; under it Triton's own helpers are interpreter functions and
nothing compiles), so the compiling runs in child processes, two at once (one per GPU).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton", reason="the kernel lab compiles with Triton (the [gpu] extra)")

from minialign import cli  # noqa: E402
from minialign.kernels import report  # noqa: E402

ROOT = pathlib.Path(__file__).parent.parent
COMMITTED = ROOT / "benchmarks" / "results" / "kernel_report.json"

CHILD = textwrap.dedent("""
    import json, sys
    import torch
    from minialign.kernels import plan, report
    from minialign.kernels.gemm import gemm
    from minialign.kernels.layer_norm import layer_norm

    out_path, device = sys.argv[1], sys.argv[2]
    arch = report.DEVICES[device].arch
    out = {"reports": {dtype: report.analyse(device, dtype) for dtype in ("bfloat16", "float32")}}

    def meta(*shape, dtype=torch.bfloat16):
        return torch.empty(shape, dtype=dtype, device="meta")

    # Two small launches, recorded outside the model, to count by hand.
    launches = []
    with plan.recording(arch, launches, ["none"]):
        gemm(meta(100, 64), meta(32, 64), bias=meta(32))
        layer_norm(meta(10, 48), meta(48), meta(48), 1e-12, residual=meta(10, 48))
    out["hand_cases"] = {l.kernel: report.bytes_and_flops(l)[:2] for l in launches}

    # The launcher, made to launch a recorded GEMM again (plan.gemm_variant), makes the very same
    # specialisation: the bare GEMMs the report prices epilogues against are what it says they are.
    model = [l for l in plan.model_launches(arch=arch) if l.kernel == "_gemm_epilogue_kernel"]
    out["variants_faithful"] = all(plan.gemm_variant(l, arch).key == l.key for l in model)
    bare = launches[0]
    bare_again = plan.gemm_variant(bare, arch, bare=True)
    out["bare_of_hand_case"] = [bare_again.constants["ACTIVATION"], sorted(bare_again.tensors)]

    # The command itself, as a user runs it (the kernels are in Triton's cache by now).
    import contextlib, io, os, tempfile
    from minialign import cli
    asm = tempfile.mkdtemp()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(["kernels", "report", "--device", device, "--json", "--asm", asm])
    out["cli"] = {"code": code, "json": json.loads(stdout.getvalue()),
                  "asm": sorted(os.listdir(os.path.join(asm, f"{device}-bfloat16")))}
    with open(out_path, "w") as fh:
        json.dump(out, fh)
""")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """{device: the child's output} for h100 and a100, compiled side by side (~2-4 minutes)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    folder = tmp_path_factory.mktemp("kernel_lab")
    children = {}
    for device in ("h100", "a100"):
        path = folder / f"{device}.json"
        children[device] = (path, subprocess.Popen([sys.executable, "-c", CHILD, str(path), device], env=env,
                                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = {}
    for device, (path, child) in children.items():
        _, stderr = child.communicate(timeout=1800)
        assert child.returncode == 0, f"compiling for {device} failed:\n{stderr[-3000:]}"
        results[device] = json.loads(path.read_text())
    return results


def test_every_kernel_the_model_launches_compiles_for_both_gpus(lab):
    for device, out in lab.items():
        for dtype, r in out["reports"].items():
            assert r["towers"]["vision"]["launches"] == 216, (device, dtype)  # 55 MBConv blocks
            for tower in ("text", "text_packed"):  # 12 layers x 5 + the embeddings' LayerNorm + the pooler
                assert r["towers"][tower]["launches"] == 62, (device, dtype, tower)
            towers = ("vision", "text", "text_packed")
            launched = {row["kernel"] for row in r["kernels"] if row["tower"] in towers}
            assert launched == {"_gemm_epilogue_kernel", "_depthwise_conv_bn_silu_kernel", "_se_gate_kernel",
                                "_attention_kernel", "_layer_norm_kernel"}, (device, dtype, launched)
            assert any(row["what"].startswith("attention packed") for row in r["kernels"]
                       if row["tower"] == "text_packed"), (device, dtype)
            others = [row["kernel"] for row in r["kernels"] if row["tower"] not in towers]
            assert others == ["_batchnorm_act_kernel"], others  # the sixth kernel, compiled all the same
            assert all(row["registers"] > 0 and row["sass_instructions"] > 0 for row in r["kernels"])


def test_the_bfloat16_configurations_spill_nothing(lab):
    """The production dtype's kernels, all of them; in float32 the GEMM too (its float32 tiles are
    chosen not to: kernels/gemm.py, CONFIGS)."""
    spilling = [f"{device} {dtype}: {row['what']} ({row['spill_store_bytes']} B stored, {row['spill_load_bytes']} B "
                f"loaded per thread at {row['registers']} registers)"
                for device, out in lab.items() for dtype, r in out["reports"].items() for row in r["kernels"]
                if (dtype == "bfloat16" or row["kernel"] == "_gemm_epilogue_kernel")
                and (row["spill_store_bytes"] or row["spill_load_bytes"])]
    assert not spilling, "register spills:\n" + "\n".join(spilling)


def test_every_gemm_is_priced_against_its_bare_gemm(lab):
    """Each GEMM row carries the predicted time of the same A and W with no epilogue, and the
    overheads are that ratio (report.epilogue_overhead); the launcher relaunched from a recorded
    launch makes the same specialisation, and the bare one of a GEMM with a bias has no epilogue."""
    for device, out in lab.items():
        assert out["variants_faithful"], device
        assert out["bare_of_hand_case"] == [None, ["a_ptr", "c_ptr", "w_ptr"]], device
        for dtype, r in out["reports"].items():
            for row in r["kernels"]:
                if row["kernel"] != "_gemm_epilogue_kernel":
                    assert "bare_seconds" not in row
                    continue
                assert row["bare_seconds"] > 0 and row["bare_what"].startswith("gemm "), (device, dtype, row["what"])
                assert row["epilogue_overhead"] == pytest.approx(row["seconds"] / row["bare_seconds"] - 1)


def test_epilogue_overhead_sets_the_bytes_aside():
    """A GEMM predicted at 12 us whose bare GEMM takes 8 us costs +50%; if its own bytes (a residual
    read) need 10 us at full bandwidth, +20% is left beyond them; memory below the bare time
    changes nothing."""
    assert report.epilogue_overhead(12e-6, 10e-6, 8e-6) == pytest.approx(
        {"bare_seconds": 8e-6, "epilogue_overhead": 0.5, "epilogue_overhead_beyond_bytes": 0.2})
    assert report.epilogue_overhead(12e-6, 5e-6, 8e-6)["epilogue_overhead_beyond_bytes"] == pytest.approx(0.5)


def test_tensor_cores_carry_the_bfloat16_matmuls(lab):
    """Every bfloat16 GEMM, the attention and the SE gate's two small products issue HGMMA (sm_90a)
    or HMMA (sm_80); nothing else does."""
    matmuls = ("_gemm_epilogue_kernel", "_attention_kernel", "_se_gate_kernel")
    for device, out in lab.items():
        for row in out["reports"]["bfloat16"]["kernels"]:
            uses = row["tensor_core_instructions"] > 0
            assert uses == (row["kernel"] in matmuls), (device, row["what"])


def test_the_se_gate_loops_are_told_apart_by_their_stores():
    """The SE gate has two loops of constant trips, the reduce (loads only) and the expand (stores
    gates); ptxas may unroll either completely. issued_per_warp matches the SASS loops left to the
    source loops by whether they store, not by position (report.STORING_LOOPS)."""
    from types import SimpleNamespace

    def loop(total, stores):
        return SimpleNamespace(depth=0, total=total, by_class={"global_store": 2} if stores else {"global_load": 4})

    def mix(*loops):  # 100 instructions in all, the loops' included
        return SimpleNamespace(total=100, by_class={}, loops=list(loops), opcodes=[])

    # reduce: ceil(640 / 64) = 10 trips; expand: 96 / 32 = 3 trips
    launch = SimpleNamespace(kernel="_se_gate_kernel", options={"num_warps": 4},
                             constants=dict(C=640, BLOCK_K=64, CHANNELS_PER_PROGRAM=96, BLOCK_C=32, PARTS=1, BLOCK_B=16))
    both, reduce, expand = loop(20, False), loop(20, False), loop(30, True)
    assert report.issued_per_warp(launch, mix(reduce, expand)) == (100 + 9 * 20 + 2 * 30, True)
    assert report.issued_per_warp(launch, mix(reduce)) == (100 + 9 * 20, True)  # the expand unrolled
    assert report.issued_per_warp(launch, mix(expand)) == (100 + 2 * 30, True)  # the reduce unrolled
    assert report.issued_per_warp(launch, mix()) == (100, True)  # both unrolled
    assert report.issued_per_warp(launch, mix(reduce, both)) == (100, False)  # two loads-only loops: unknown


def test_bytes_and_flops_are_the_hand_count(lab):
    """gemm: A [100, 64], W [32, 64], bias [32], C [100, 32] in bfloat16 (2 B): (6400 + 2048 + 32 +
    3200) x 2 = 23,360 B and 2 x 100 x 32 x 64 = 409,600 FLOPs. layer_norm with a residual: x, the
    residual and y [10, 48] and gamma, beta [48]: (3 x 480 + 2 x 48) x 2 = 3,072 B, and 8 FLOPs
    per element (7, +1 for the residual's add) x 480 = 3,840."""
    for device, out in lab.items():
        assert out["hand_cases"] == {"_gemm_epilogue_kernel": [23360, 409600],
                                     "_layer_norm_kernel": [3072, 3840]}, device


def test_the_prediction_is_the_largest_of_three_limits(lab):
    r = lab["h100"]["reports"]["bfloat16"]
    for row in r["kernels"]:
        assert row["seconds"] >= row["memory_seconds"] > 0
        assert row["limited_by"] in ("memory", "math", "issue")
    for tower in r["towers"].values():
        assert 0 < tower["predicted_per_s"] <= tower["memory_bound_per_s"]
    text = report.format_report(r)
    assert "vision: 216 launches" in text and "text: 62 launches" in text and "text_packed: 62 launches" in text


def test_the_committed_report_is_what_this_triton_compiles(lab):
    """The docs' numbers come from benchmarks/results/kernel_report.json; compiled again here
    (with the same Triton), every specialisation has the same registers, spills, shared memory
    and SASS, and the towers the same predictions."""
    import triton

    committed = json.loads(COMMITTED.read_text())
    if committed["triton"] != triton.__version__:
        pytest.skip(f"the committed report was compiled by Triton {committed['triton']}, this is {triton.__version__}")
    keys = ("what", "launches", "registers", "spill_store_bytes", "shared_bytes", "sass_instructions",
            "tensor_core_instructions", "issued_per_warp")
    for name, saved in committed["reports"].items():
        device, dtype = name.split("-")
        fresh = lab[device]["reports"][dtype]
        assert [{k: row[k] for k in keys} for row in fresh["kernels"]] == \
               [{k: row[k] for k in keys} for row in saved["kernels"]], name
        for tower in saved["towers"]:
            assert fresh["towers"][tower]["predicted_per_s"] == pytest.approx(saved["towers"][tower]["predicted_per_s"])


def test_the_command_prints_json_and_writes_the_assembly(lab):
    for device, out in lab.items():
        cli_out = out["cli"]
        assert cli_out["code"] == 0
        assert cli_out["json"]["kernels"] == out["reports"]["bfloat16"]["kernels"]
        arch = report.DEVICES[device].arch
        rows = len(cli_out["json"]["kernels"])
        assert len(cli_out["asm"]) == 2 * rows  # a .ptx and a .sass per specialisation
        assert all(name.endswith((f".{arch}.ptx", f".{arch}.sass")) for name in cli_out["asm"])


def test_the_command_refuses_the_interpreter(capsys):
    """conftest sets TRITON_INTERPRET=1 for this process: the lab says to unset it, in one line."""
    assert cli.main(["kernels", "report"]) == 2
    err = capsys.readouterr().err
    assert "TRITON_INTERPRET" in err and err.count("\n") == 1
