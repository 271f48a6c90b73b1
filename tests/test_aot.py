"""Tests for kernels/aot.py: compile tiny kernels for H100 (sm_90a) and A100 (sm_80) on a machine
without a GPU, and check what the compiler made of them.

The asserted facts were first read off the SASS (``write_asm`` writes it out); each says why it
holds. conftest.py sets TRITON_INTERPRET=1 on a machine without a GPU, and a process that imported
triton under it cannot compile (triton.language's own helpers became interpreter functions), so
every compilation runs in one child process without it (``compiled``, a few seconds).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import triton.language as tl
from triton.runtime.jit import JITFunction

from minialign.kernels import aot

# What @triton.jit returns without TRITON_INTERPRET, the compiler's input; under it, @triton.jit
# would return an interpreter function, and these kernels are compiled, never interpreted.
jit = JITFunction

DIVISIBLE_BY_16 = [["tt.divisibility", 16]]  # an attrs value, as JITFunction._pack_args writes it


@jit
def vector_add(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask)
    y = tl.load(y_ptr + offsets, mask=mask)
    tl.store(out_ptr + offsets, x + y, mask=mask)


@jit
def tile_matmul(a_ptr, b_ptr, c_ptr, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr):
    # a: [M, K] bf16, b: [K, N] bf16, c: [M, N] fp32, all row-major; one block, one tile.
    rm, rn, rk = tl.arange(0, M), tl.arange(0, N), tl.arange(0, K)
    a = tl.load(a_ptr + rm[:, None] * K + rk[None, :])
    b = tl.load(b_ptr + rk[:, None] * N + rn[None, :])
    tl.store(c_ptr + rm[:, None] * N + rn[None, :], tl.dot(a, b))


@jit
def strided_sum(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    # out[j] = sum over i of x[i * BLOCK + j]: a loop whose trip count n / BLOCK is known at run time only.
    acc = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, n, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        acc += tl.load(x_ptr + offsets, mask=offsets < n, other=0.0)
    tl.store(out_ptr + tl.arange(0, BLOCK), acc)


@jit
def does_not_compile(x_ptr):
    tl.store(x_ptr + tl.arange(0, 3), 1.0)  # arange needs a power-of-two length


ADD_SIGNATURE = {"x_ptr": "*bf16", "y_ptr": "*bf16", "out_ptr": "*bf16", "n": "i32", "BLOCK": "constexpr"}
SPECS = {  # name -> (kernel, signature, constexprs, attrs, options)
    # n divisible by 16, as the JIT marks it when it is: every thread's 8 elements share one mask bit.
    "add_n16": (vector_add, ADD_SIGNATURE, {(4,): 1024},
                {(0,): DIVISIBLE_BY_16, (1,): DIVISIBLE_BY_16, (2,): DIVISIBLE_BY_16, (3,): DIVISIBLE_BY_16},
                {"num_warps": 4}),
    # n of unknown divisibility: each element is masked on its own.
    "add_any_n": (vector_add, ADD_SIGNATURE, {(4,): 1024},
                  {(0,): DIVISIBLE_BY_16, (1,): DIVISIBLE_BY_16, (2,): DIVISIBLE_BY_16}, {"num_warps": 4}),
    "matmul": (tile_matmul, {"a_ptr": "*bf16", "b_ptr": "*bf16", "c_ptr": "*fp32", "M": "constexpr",
                             "N": "constexpr", "K": "constexpr"},
               {(3,): 64, (4,): 64, (5,): 64}, {(0,): DIVISIBLE_BY_16, (1,): DIVISIBLE_BY_16, (2,): DIVISIBLE_BY_16},
               {"num_warps": 4}),
    "loop": (strided_sum, {"x_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"},
             {(3,): 256}, {(0,): DIVISIBLE_BY_16, (1,): DIVISIBLE_BY_16}, {"num_warps": 4}),
}




def compile_everything(out_path: str) -> None:
    """In the child: compile every spec for both archs, and the failures, pickled to ``out_path``."""
    results = {(name, arch): aot.compile_for(*spec, arch) for name, spec in SPECS.items() for arch in aot.ARCHS}
    failures = {
        "does_not_compile": lambda: aot.compile_for(does_not_compile, {"x_ptr": "*fp32"}, {}, {}, {}, "sm_80"),
        "no_nvdisasm": lambda: (os.environ.__setitem__("TRITON_NVDISASM_PATH", "/nowhere/nvdisasm"),
                                aot.compile_for(*SPECS["add_n16"], "sm_80")),
    }
    for name, attempt in failures.items():
        try:
            attempt()
            results[name] = None
        except aot.AotError as error:
            results[name] = str(error)
    Path(out_path).write_bytes(pickle.dumps(results))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    out_path = tmp_path_factory.mktemp("aot") / "compiled.pickle"
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITON_NVDISASM_PATH")}
    tests = Path(__file__).parent
    child = (f"import sys; sys.path[:0] = [{str(tests)!r}]; import test_aot; "
             f"test_aot.compile_everything({str(out_path)!r})")
    done = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return pickle.loads(out_path.read_bytes())


ARCHS = pytest.mark.parametrize("arch", ["sm_90a", "sm_80"])


# --- instruction_mix on hand-written SASS: exact counts -----------------------------------------

SNIPPET = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
        /*0020*/                   UIADD3 UR4, UR4, 0x1, URZ ;
.L_x_0:
        /*0030*/              @!P0 LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0040*/                   LDG.E.U16 R8, desc[UR4][R2.64] ;
.L_x_1:
        /*0050*/                   FFMA R9, R4, R5, R9 ;
        /*0060*/                   MUFU.EX2 R10, R9 ;
        /*0070*/               @P1 BRA `(.L_x_1) ;
        /*0080*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4].tnspB, R24 ;
        /*0090*/                   NOP ;
        /*00a0*/              @!P0 BRA `(.L_x_0) ;
        /*00b0*/                   STG.E.64 desc[UR4][R4.64], R8 ;
        /*00c0*/                   FOO R1, R2 ;
        /*00d0*/                   EXIT ;
.L_x_2:
        /*00e0*/                   BRA `(.L_x_2);
        /*00f0*/                   NOP;
"""


def test_instruction_mix_hand_written():
    mix = aot.instruction_mix(SNIPPET)
    assert mix.total == 16
    assert mix.by_class == {"constant_load": 1, "integer": 2, "global_load": 2, "fp32": 1, "special_function": 1,
                            "control": 3, "tensor_core": 1, "nop": 1, "global_store": 1, "other": 1,
                            # ptxas' tail: the branch to itself and the alignment NOP after EXIT
                            "padding": 2}
    assert mix.global_load_widths == {16: 1, 2: 1}
    assert mix.global_store_widths == {8: 1}
    assert mix.unclassified == {"FOO": 1}
    assert mix.opcodes[3] == "LDG.E.128" and mix.opcodes[8] == "HGMMA.64x64x16.F32.BF16"

    outer, inner = mix.loops  # the padding self-branch is not a loop
    assert (outer.start, outer.end, outer.depth, outer.parent) == (3, 10, 0, None)
    assert (inner.start, inner.end, inner.depth, inner.parent) == (5, 7, 1, 0)
    # A loop counts its whole body, the inner loop's FFMA, MUFU and BRA included.
    assert outer.by_class == {"global_load": 2, "tensor_core": 1, "nop": 1, "control": 2, "fp32": 1,
                              "special_function": 1}
    assert outer.total == 8 and outer.global_load_bytes_per_thread == 16 + 2
    assert inner.by_class == {"fp32": 1, "special_function": 1, "control": 1}
    assert outer.total + mix.outside_loops.total == mix.total
    # With trip counts 10 (outer) and 5 (inner), one warp issues: outside once, the outer body 10
    # times, the inner body 10 x 5 times; the padding (in outside_loops) never.
    issued = mix.total + outer.total * (10 - 1) + inner.total * (5 - 1) * 10 - mix.by_class["padding"]
    assert issued == (8 - 2) + 10 * (8 - 3) + 10 * 5 * 3


def test_classify_and_widths():
    assert aot.classify("LDG.E.LTC128B.128") == "global_load"
    assert aot.access_bytes("LDG.E.LTC128B.128") == 16  # .LTC128B is a cache hint, not a width
    assert aot.access_bytes("STG.E") == 4
    assert aot.access_bytes("LDG.E.S8") == 1
    assert aot.classify("UTMALDG.2D") == "async_copy"  # not "U" + TMALDG
    assert aot.classify("ULDC.64") == "constant_load"
    assert aot.classify("WARPGROUP.ARRIVE") == "sync"  # a wgmma fence, no math
    assert aot.classify("STL.64") == "local"  # where spills go


# --- compiled kernels -----------------------------------------------------------------------------

@ARCHS
def test_vector_add(compiled, arch):
    kernel = compiled["add_n16", arch]
    assert kernel.kernel_name == "vector_add" and kernel.arch == arch and kernel.num_warps == 4
    assert kernel.registers_per_thread > 0
    assert kernel.spill_store_bytes == kernel.spill_load_bytes == 0
    assert kernel.shared_bytes_per_block == 0
    mix = kernel.mix
    assert "tensor_core" not in mix.by_class and mix.loops == []
    # 1024 bf16 over 128 threads: 8 contiguous elements (16 B) per thread, and with n divisible by
    # 16 one mask covers all 8, so each input is one 16-byte load and the output one 16-byte store.
    assert mix.global_load_widths == {16: 2}
    assert mix.global_store_widths == {16: 1}


@ARCHS
def test_vector_add_divisibility_decides_the_width(compiled, arch):
    # Without the divisibility of n each of the 8 elements has its own mask bit: 8 two-byte loads.
    mix = compiled["add_any_n", arch].mix
    assert mix.global_load_widths == {2: 16}
    assert mix.global_store_widths == {2: 8}


@ARCHS
def test_registers_match_the_cubin(compiled, arch, tmp_path):
    # ptxas -v is rerun on Triton's PTX: it must describe the cubin Triton built.
    kernel = compiled["matmul", arch]
    path = tmp_path / "matmul.cubin"
    path.write_bytes(kernel.cubin)
    usage = subprocess.run([str(aot.nvidia_tool("cuobjdump")), "-res-usage", str(path)],
                           capture_output=True, text=True, check=True).stdout
    assert f"REG:{kernel.registers_per_thread} " in usage


def test_matmul_sm80_uses_mma_sync(compiled):
    kernel = compiled["matmul", "sm_80"]
    tensor_ops = [op for op in kernel.mix.opcodes if aot.classify(op) == "tensor_core"]
    # mma.sync m16n8k16: a 64x64x64 tile is 64*64*64 / (16*8*16) = 128 MMAs, 32 per warp.
    assert tensor_ops == ["HMMA.16816.F32.BF16"] * 32
    assert kernel.mix.by_class["shared_load"] > 0  # operands reach the MMAs through LDSM
    assert any(op.startswith("LDSM") for op in kernel.mix.opcodes)
    assert kernel.shared_bytes_per_block == 2 * 64 * 64 * 2  # A and B tiles, bf16


def test_matmul_sm90_uses_wgmma(compiled):
    kernel = compiled["matmul", "sm_90a"]
    tensor_ops = [op for op in kernel.mix.opcodes if aot.classify(op) == "tensor_core"]
    # 4 warps are one warpgroup, so Triton 3.6 emits wgmma: instruction shape 64x64x16 (N = the
    # tile's 64), K = 64 in 4 steps, each issued by all 4 warps. Operands are read from shared
    # memory by descriptor (gdesc), so no LDSM feeds them.
    assert tensor_ops == ["HGMMA.64x64x16.F32.BF16"] * 4
    assert "WARPGROUP.ARRIVE" in kernel.mix.opcodes
    assert not any(op.startswith("LDSM") for op in kernel.mix.opcodes)
    assert kernel.shared_bytes_per_block == 2 * 64 * 64 * 2


@ARCHS
def test_runtime_loop(compiled, arch):
    mix = compiled["loop", arch].mix
    (loop,) = mix.loops
    assert loop.depth == 0 and loop.parent is None
    assert mix.opcodes[loop.end].startswith("BRA")
    # A source iteration loads 256 fp32 over 128 threads: 2 scalar loads per thread (the runtime
    # mask splits them). ptxas unrolls the loop (4x here: 8 loads) and puts the remainder
    # iterations after it, so the body holds a multiple of 2, and loads also sit outside it.
    loads = loop.by_class["global_load"]
    assert loads % 2 == 0 and loads >= 2
    assert loop.global_load_widths == {4: loads}
    assert loop.by_class["fp32"] == loads  # one FADD per loaded element
    assert mix.outside_loops.by_class.get("global_load", 0) + loads == mix.by_class["global_load"]


def test_write_asm(compiled, tmp_path):
    kernel = compiled["add_n16", "sm_90a"]
    ptx_path, sass_path = aot.write_asm(kernel, tmp_path / "asm", "vector_add")
    assert ptx_path.name == "vector_add.sm_90a.ptx" and sass_path.name == "vector_add.sm_90a.sass"
    assert ".target sm_90a" in ptx_path.read_text()
    assert "LDG.E.128" in sass_path.read_text()


# --- occupancy: hand-computed cases ---------------------------------------------------------------

def test_occupancy_register_limited():
    # 128 registers x 32 lanes = 4096 per warp; a quarter SM holds 16384 / 4096 = 4 warps, the SM 16;
    # 256 threads = 8 warps per block -> 2 blocks.
    occ = aot.occupancy(128, 0, 8, "sm_90a")
    assert (occ.blocks_by_registers, occ.blocks_per_sm, occ.limited_by) == (2, 2, ("registers",))
    assert occ.warps_per_sm == 16 and occ.warp_occupancy == 0.25
    # 255 registers round up to 256 per thread (8192 per warp): 8 warps per SM, one 8-warp block.
    assert aot.occupancy(255, 0, 8, "sm_90a").blocks_per_sm == 1
    # 40 registers: 1280 per warp, 12 warps per quarter (not 51 / 4 = 12.8) -> 48 warps -> 16
    # blocks of 3 warps, where dividing the whole register file would give 17.
    assert aot.occupancy(40, 0, 3, "sm_80").blocks_by_registers == 16
    # More than fit: none.
    assert aot.occupancy(255, 0, 16, "sm_80").blocks_per_sm == 0


def test_occupancy_shared_memory_limited():
    # 100 KB + 1 KB reserved per block on A100's 164 KB: one block.
    occ = aot.occupancy(32, 100 * 1024, 4, "sm_80")
    assert (occ.blocks_per_sm, occ.limited_by) == (1, ("shared_memory",))
    assert occ.shared_bytes_per_block_allocated == 101 * 1024
    # The same block fits twice in H100's 228 KB.
    assert aot.occupancy(32, 100 * 1024, 4, "sm_90a").blocks_by_shared_memory == 2
    # Over the per-block maximum (163 KB on A100): cannot launch.
    assert aot.occupancy(32, 170 * 1024, 4, "sm_80").blocks_by_shared_memory == 0


def test_occupancy_block_and_warp_caps():
    # One warp, 16 registers, no shared memory: 32 blocks (the block cap) = 32 of 64 warps.
    occ = aot.occupancy(16, 0, 1, "sm_80")
    assert (occ.blocks_per_sm, occ.limited_by, occ.warp_occupancy) == (32, ("blocks",), 0.5)
    # 32-warp blocks: two fill the 64 warp slots.
    occ = aot.occupancy(16, 0, 32, "sm_90a")
    assert (occ.blocks_per_sm, occ.limited_by, occ.warps_per_sm) == (2, ("warps",), 64)
    # Ties are all reported: 32 registers x 4 warps fills the register file exactly at 16 blocks.
    assert aot.occupancy(32, 0, 4, "sm_90a").limited_by == ("registers", "warps")


def test_compiled_occupancy_matches_the_function(compiled):
    kernel = compiled["matmul", "sm_90a"]
    assert kernel.occupancy() == aot.occupancy(kernel.registers_per_thread, kernel.shared_bytes_per_block,
                                                 4, "sm_90a")


# --- errors ---------------------------------------------------------------------------------------

def test_compile_failure_names_kernel_and_arch(compiled):
    message = compiled["does_not_compile"]
    assert message.startswith("Triton could not compile does_not_compile for sm_80: CompilationError")


def test_incomplete_signature_and_unknown_arch():
    with pytest.raises(aot.AotError, match=r"vector_add for sm_90a: the signature has no type for \['BLOCK'\]"):
        aot.compile_for(vector_add, {k: v for k, v in ADD_SIGNATURE.items() if k != "BLOCK"}, {}, {}, {}, "sm_90a")
    with pytest.raises(aot.AotError, match="unknown arch 'sm_75'"):
        aot.compile_for(vector_add, ADD_SIGNATURE, {(4,): 1024}, {}, {}, "sm_75")


def test_interpreter_function_is_refused():
    from triton.runtime.interpreter import InterpretedFunction

    with pytest.raises(aot.AotError, match="InterpretedFunction, not a JITFunction: unset TRITON_INTERPRET"):
        aot.compile_for(InterpretedFunction(vector_add.fn), *SPECS["add_n16"][1:], "sm_80")


def test_missing_tool_names_its_path(compiled):
    assert compiled["no_nvdisasm"] == "vector_add for sm_80: nvdisasm not found or not executable at /nowhere/nvdisasm"


def test_refused_under_the_interpreter(monkeypatch):
    # This process may well have imported triton under TRITON_INTERPRET=1 (conftest.py).
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(aot.AotError, match="vector_add for sm_80: cannot compile .* TRITON_INTERPRET=1"):
        aot.compile_for(*SPECS["add_n16"], "sm_80")
