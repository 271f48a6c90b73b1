"""Compile a Triton kernel for a named NVIDIA GPU without one, and read what the compiler made.

The kernel lab's bottom layer. ``compile_for`` runs Triton's own pipeline
(``triton.compile(ASTSource(...), target=GPUTarget(...))``: Python -> TTIR -> TTGIR -> LLVM ->
PTX -> cubin) for a target given by name, which needs no GPU and no driver. It then asks NVIDIA's
tools that Triton ships in ``triton/backends/nvidia/bin`` for the facts a performance model needs:

- ``ptxas -v`` prints, per entry function, "Used N registers" and "N bytes spill stores, N bytes
  spill loads". We rerun it on Triton's PTX with the flags Triton's ``make_cubin`` uses, so the
  numbers are those of the cubin Triton built (the tests check them against ``cuobjdump
  -res-usage``).
- ``nvdisasm -c`` turns the cubin into SASS, the machine code the SM issues. ``instruction_mix``
  counts it by class and finds the loops, which a caller multiplies by trip counts it knows.
- ``metadata.shared`` is the shared memory Triton allocates per block (bytes).

``occupancy`` then applies CUDA's occupancy rules (the arithmetic of ``cuda_occupancy.h``, the
header behind ``cudaOccupancyMaxActiveBlocksPerMultiprocessor``) to registers, shared memory and
warps. Facts it relies on: registers are allocated per warp in units of 256 (a per-thread count
rounded up to a multiple of 8), separately in each of the SM's 4 sub-partitions; every block also
holds 1 KB of shared memory reserved by CUDA (``reservedSharedMemPerBlock``, compute capability
8.0 and later), and shared memory is allocated in 128-byte units.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.runtime.jit import JITFunction


class AotError(RuntimeError):
    """Compiling or inspecting a kernel failed; the message names the kernel, the arch and the tool."""


@dataclass(frozen=True)
class Arch:
    """One target GPU: what Triton compiles for, and the per-SM limits occupancy depends on.

    Figures from the CUDA C Programming Guide, "Compute Capabilities" table ("Technical
    Specifications per Compute Capability"), and from cuda_occupancy.h for the allocation units.
    """

    name: str                          # ptxas --gpu-name; Triton turns capability 90 into sm_90a
    target: GPUTarget
    shared_bytes_per_sm: int           # the largest shared-memory carveout of the unified L1
    max_shared_bytes_per_block: int    # with opt-in (Triton opts in for what it needs)
    registers_per_sm: int = 65536      # 64 K 32-bit registers
    max_registers_per_thread: int = 255
    register_alloc_unit_per_warp: int = 256  # so per-thread counts round up to a multiple of 8
    register_sub_partitions: int = 4   # each quarter of the SM holds its warps' registers
    max_warps_per_sm: int = 64         # 2048 threads
    max_blocks_per_sm: int = 32
    reserved_shared_bytes_per_block: int = 1024
    shared_alloc_unit_bytes: int = 128


KB = 1024
ARCHS = {
    "sm_90a": Arch("sm_90a", GPUTarget("cuda", 90, 32), 228 * KB, 227 * KB),  # H100 / H200
    "sm_80": Arch("sm_80", GPUTarget("cuda", 80, 32), 164 * KB, 163 * KB),    # A100
}

# ---------------------------------------------------------------------------------------------
# SASS: instruction classes, widths, loops
# ---------------------------------------------------------------------------------------------

# By base opcode (the text before the first "."). Uniform-datapath instructions (UIADD3, ULDC,
# ...: one value per warp) are classed as the per-thread instruction they mirror; the copy engines
# (UTMALDG, UBLKCP) start with U too, so they are looked up first. WARPGROUP.ARRIVE / WARPGROUP.DEPBAR are wgmma fences, not math: they are "sync".
_CLASSES = {
    "global_load": "LDG",
    "global_store": "STG",
    "atomic": "ATOM ATOMG ATOMS RED REDG",
    "shared_load": "LDS LDSM",
    "shared_store": "STS STSM",
    "local": "LDL STL",  # register spills and stack: ptxas' spill bytes land here
    "generic_memory": "LD ST",
    "constant_load": "LDC",
    "async_copy": "LDGSTS LDGDEPBAR UTMALDG UTMASTG UTMAPF UTMACCTL UTMAREDG UBLKCP UBLKRED UBLKPF",
    "tensor_core": "HMMA HGMMA IMMA IGMMA QGMMA BGMMA DMMA BMMA",
    "fp32": "FFMA FADD FMUL FMNMX FSETP FSET FSEL FCHK FSWZADD FADD32I FMUL32I FFMA32I",
    "fp16x2": "HADD2 HFMA2 HMUL2 HMNMX2 HSETP2 HSET2",
    "fp64": "DADD DFMA DMUL DSETP DMNMX",
    "special_function": "MUFU",
    "conversion": "F2F F2FP F2I I2F I2FP F2IP I2I FRND",
    "integer": "IMAD IMUL IADD IADD3 IADD32I VIADD VIADDMNMX VIMNMX IMNMX IABS LEA SHF SHL SHR "
               "LOP LOP3 ISETP ISCADD POPC FLO BREV BMSK PRMT SGXT IDP MOV SEL PLOP3 P2R R2P "
               "CS2R S2R S2UR R2UR LEPC",
    "warp": "SHFL VOTE VOTEU MATCH REDUX ELECT",
    "sync": "BAR BSSY BSYNC WARPSYNC MEMBAR FENCE DEPBAR ERRBAR CCTL SYNCS WARPGROUP ARRIVES",
    "control": "BRA BRX JMP JMX EXIT RET CALL BPT KILL YIELD NANOSLEEP BREAK",
    "nop": "NOP",
}
_CLASS_OF = {op: cls for cls, ops in _CLASSES.items() for op in ops.split()}
CLASSES = (*_CLASSES, "padding", "other")

# Bytes per thread of LDG/STG by width modifier; no modifier means 32 bits.
_WIDTH_BYTES = {"128": 16, "64": 8, "U16": 2, "S16": 2, "U8": 1, "S8": 1}

# "/*0120*/   @!P0 LDG.E.128 R4, desc[UR4][R2.64] ;" -> predicate, opcode.modifiers, operands
_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]+\*/\s+(@!?U?P(?:T|\d+)\s+)?([A-Z][A-Z0-9_]*(?:\.\w+)*)\s*([^;]*);")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_BRANCH_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


def classify(opcode: str) -> str:  # "LDG.E.128" -> "global_load"
    base = opcode.split(".")[0]
    if base in _CLASS_OF:
        return _CLASS_OF[base]
    if base.startswith("U") and base[1:] in _CLASS_OF:
        return _CLASS_OF[base[1:]]
    return "other"


def access_bytes(opcode: str) -> int:  # "LDG.E.128" -> 16 bytes per thread
    widths = [_WIDTH_BYTES[m] for m in opcode.split(".")[1:] if m in _WIDTH_BYTES]
    return widths[0] if widths else 4


@dataclass(frozen=True)
class Counts:
    """Static counts over a range of SASS instructions (one entry = one warp-instruction)."""

    total: int
    by_class: dict[str, int]              # class (see CLASSES) -> instructions
    global_load_widths: dict[int, int]    # bytes per thread -> number of LDG of that width
    global_store_widths: dict[int, int]   # bytes per thread -> number of STG of that width

    @property
    def global_load_bytes_per_thread(self) -> int:  # one pass over the range, every lane active
        return sum(width * n for width, n in self.global_load_widths.items())

    @property
    def global_store_bytes_per_thread(self) -> int:
        return sum(width * n for width, n in self.global_store_widths.items())


@dataclass(frozen=True)
class Loop(Counts):
    """A SASS loop: a backward branch at ``end`` to the label before instruction ``start``.

    Its counts are its whole body, instructions ``start`` to ``end``, nested loops' included.
    """

    start: int                # instruction index of the loop head (the branch target)
    end: int                  # instruction index of the backward branch, inclusive
    depth: int                # 0 for an outermost loop
    parent: int | None        # index in InstructionMix.loops of the enclosing loop


@dataclass(frozen=True)
class InstructionMix(Counts):
    """Whole-kernel counts, the loops, and the code outside every loop."""

    loops: list[Loop]
    outside_loops: Counts
    opcodes: list[str] = field(repr=False)    # every instruction's opcode.modifiers, in order
    unclassified: dict[str, int] = field(default_factory=dict)  # base opcode -> count, class "other"


def _counts(opcodes: list[str], classes: list[str]) -> Counts:
    loads = Counter(access_bytes(op) for op, c in zip(opcodes, classes) if c == "global_load")
    stores = Counter(access_bytes(op) for op, c in zip(opcodes, classes) if c == "global_store")
    return Counts(len(opcodes), dict(Counter(classes)), dict(loads), dict(stores))


def instruction_mix(sass: str) -> InstructionMix:
    """Count the SASS that ``nvdisasm -c`` prints, by class, for the kernel and for each loop.

    Static counts: each instruction once, as it sits in the code. A loop's counts are its whole
    body (nested loops included), so with trip counts T what one warp issues is ``total`` less
    the padding (below), plus for each loop its counts x (T - 1) x the product of its ancestors' T.
    Limits of that estimate:
    - one SASS instruction is one warp-instruction; predicated-off instructions are still issued
      and counted, and lanes masked off still count as lanes (widths are per thread);
    - trip counts are SASS trip counts: ptxas may unroll a source loop (it unrolled a runtime
      ``range`` 4x in this project's tests, with the remainder as straight code outside the loop),
      which a caller detects from the loop's LDG count per source iteration;
    - loops are found from backward branches to labels (several back edges to one head are one
      loop); code that a forward branch may skip (an ``if``) counts as executed, and a subroutine
      reached by CALL (ptxas' slow paths, placed after EXIT) counts once, where it sits;
    - tensor-core work per instruction differs: HMMA.16816 is one 16x8x16 MMA per warp, while
      HGMMA.64xNx16 is one 64xNx16 MMA per warpgroup, each of its 4 warps issuing the instruction.
    ptxas ends every function with an unreachable ``.L_x_N: BRA .L_x_N`` followed by NOPs up to a
    128-byte boundary; those are class "padding", never issued, and not a loop.
    """
    opcodes: list[str] = []
    label_index: dict[str, int] = {}          # label -> index of the instruction after it
    branches: list[tuple[int, str]] = []      # (index of a BRA, its target label)
    for line in sass.splitlines():
        if label := _LABEL.match(line):
            label_index[label.group(1)] = len(opcodes)
        elif insn := _INSTRUCTION.match(line):
            opcode, operands = insn.group(2), insn.group(3)
            if opcode.split(".")[0] == "BRA" and (target := _BRANCH_TARGET.search(operands)):
                branches.append((len(opcodes), target.group(1)))
            opcodes.append(opcode)
    classes = [classify(op) for op in opcodes]

    # The padding tail: an unconditional branch to itself with nothing but NOPs after it.
    padding_start = len(opcodes)
    for index, target in branches:
        if label_index.get(target) == index and all(c == "nop" for c in classes[index + 1:]):
            padding_start = index
    classes[padding_start:] = ["padding"] * (len(opcodes) - padding_start)

    loop_end: dict[int, int] = {}             # head index -> last back edge
    for index, target in branches:
        head = label_index.get(target)
        if head is not None and head <= index < padding_start:
            loop_end[head] = max(loop_end.get(head, index), index)
    spans = sorted(loop_end.items(), key=lambda span: (span[0], -span[1]))  # outer before inner

    parents = [next((p for p in reversed(range(n)) if spans[p][0] <= start and end <= spans[p][1]), None)
               for n, (start, end) in enumerate(spans)]  # the innermost earlier span holding it

    def depth(number: int) -> int:
        return 0 if parents[number] is None else 1 + depth(parents[number])

    loops = [Loop(**vars(_counts(opcodes[s:e + 1], classes[s:e + 1])), start=s, end=e, depth=depth(n),
                  parent=parents[n]) for n, (s, e) in enumerate(spans)]
    outside = [i for i in range(len(opcodes)) if not any(s <= i <= e for s, e in spans)]
    unclassified = Counter(op.split(".")[0] for op, c in zip(opcodes, classes) if c == "other")
    return InstructionMix(**vars(_counts(opcodes, classes)), loops=loops,
                          outside_loops=_counts([opcodes[i] for i in outside], [classes[i] for i in outside]),
                          opcodes=opcodes, unclassified=dict(unclassified))


# ---------------------------------------------------------------------------------------------
# Occupancy
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Occupancy:
    """Resident blocks per SM and what limits them (the rules of cuda_occupancy.h)."""

    arch: str
    blocks_per_sm: int                    # min of the four limits below
    blocks_by_registers: int
    blocks_by_shared_memory: int
    blocks_by_warps: int
    blocks_by_block_limit: int
    limited_by: tuple[str, ...]           # every limit equal to blocks_per_sm, as CUDA reports ties
    warps_per_sm: int                     # resident warps: blocks_per_sm x warps per block
    warp_occupancy: float                 # warps_per_sm / max warps per SM (64), in [0, 1]
    registers_per_warp_allocated: int     # registers x 32 rounded up to 256
    shared_bytes_per_block_allocated: int  # shared + 1 KB reserved, rounded up to 128 B


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def occupancy(registers: int, shared_bytes: int, num_warps: int, arch: str) -> Occupancy:
    """Blocks per SM for a kernel using ``registers`` per thread and ``shared_bytes`` per block."""
    spec = ARCHS[arch]
    regs_per_warp = _round_up(registers * 32, spec.register_alloc_unit_per_warp)
    if registers > spec.max_registers_per_thread or regs_per_warp * num_warps > spec.registers_per_sm:
        by_registers = 0
    elif regs_per_warp == 0:
        by_registers = spec.max_blocks_per_sm
    else:  # registers are allocated in each sub-partition: whole warps per quarter, times 4
        per_partition = spec.registers_per_sm // spec.register_sub_partitions // regs_per_warp
        by_registers = per_partition * spec.register_sub_partitions // num_warps
    shared_alloc = _round_up(shared_bytes + spec.reserved_shared_bytes_per_block, spec.shared_alloc_unit_bytes)
    by_shared = 0 if shared_bytes > spec.max_shared_bytes_per_block else spec.shared_bytes_per_sm // shared_alloc
    limits = {"registers": by_registers, "shared_memory": by_shared,
              "warps": spec.max_warps_per_sm // num_warps, "blocks": spec.max_blocks_per_sm}
    blocks = min(limits.values())
    return Occupancy(arch, blocks, by_registers, by_shared, limits["warps"], limits["blocks"],
                     tuple(name for name, n in limits.items() if n == blocks), blocks * num_warps,
                     blocks * num_warps / spec.max_warps_per_sm, regs_per_warp, shared_alloc)


# ---------------------------------------------------------------------------------------------
# Compile
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Compiled:
    """One kernel specialisation compiled for one arch, with what the compiler made of it."""

    arch: str
    kernel_name: str
    num_warps: int
    ptx: str = field(repr=False)
    cubin: bytes = field(repr=False)
    sass: str = field(repr=False)
    registers_per_thread: int
    spill_store_bytes: int               # per thread, from ptxas -v
    spill_load_bytes: int
    shared_bytes_per_block: int          # Triton's metadata.shared
    mix: InstructionMix = field(repr=False)

    def occupancy(self) -> Occupancy:
        return occupancy(self.registers_per_thread, self.shared_bytes_per_block, self.num_warps, self.arch)


def nvidia_tool(name: str) -> Path:
    """The NVIDIA binary Triton uses: $TRITON_<NAME>_PATH if set, else the one Triton ships."""
    override = os.environ.get(f"TRITON_{name.upper().replace('-', '_')}_PATH")
    return Path(override) if override else Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name


def _run_tool(name: str, args: list[str], kernel: str, arch: str) -> str:  # -> stdout + stderr
    tool = nvidia_tool(name)
    if not (tool.is_file() and os.access(tool, os.X_OK)):
        raise AotError(f"{kernel} for {arch}: {name} not found or not executable at {tool}")
    done = subprocess.run([str(tool), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise AotError(f"{kernel} for {arch}: {tool} {' '.join(args)} failed with exit code "
                       f"{done.returncode}:\n{done.stderr.strip()}")
    return done.stdout + done.stderr


def _ptxas_number(log: str, pattern: str, kernel: str, arch: str) -> int:
    if (found := re.search(pattern, log)) is None:
        raise AotError(f"{kernel} for {arch}: no {pattern!r} in the ptxas -v output:\n{log}")
    return int(found.group(1))


def compile_for(fn, signature: dict, constexprs: dict, attrs: dict, options: dict, arch: str) -> Compiled:
    """Compile the ``@triton.jit`` function ``fn`` for ``arch`` ("sm_90a" or "sm_80").

    ``signature`` maps every parameter to a Triton type ("*bf16", "i32", "constexpr", ...);
    ``constexprs`` maps ``(index,)`` (or the name) to its value and ``attrs`` maps ``(index,)``
    to e.g. ``[["tt.divisibility", 16]]``, as ``JITFunction._pack_args`` builds them;
    ``options`` is what a launch takes (num_warps, num_stages, ...).
    """
    name = getattr(fn, "__name__", repr(fn))
    if arch not in ARCHS:
        raise AotError(f"{name}: unknown arch {arch!r}; known: {sorted(ARCHS)}")
    if not isinstance(fn, JITFunction):  # under TRITON_INTERPRET=1, @triton.jit skips the compiler
        raise AotError(f"{name} is a {type(fn).__name__}, not a JITFunction: unset TRITON_INTERPRET, "
                       "or wrap the Python function in triton.runtime.jit.JITFunction")
    if missing := [p for p in fn.arg_names if p not in signature]:
        raise AotError(f"{name} for {arch}: the signature has no type for {missing}")
    source = triton.compiler.ASTSource(fn, signature, constexprs, attrs)
    if knobs.runtime.interpret or not isinstance(triton.language.standard.cdiv, JITFunction):
        # Under it, triton.language's own @jit helpers (tl.sum, tl.cdiv, ...) were made interpreter
        # functions at import, and the front end leaves constexprs unwrapped: nothing compiles.
        raise AotError(f"{name} for {arch}: cannot compile in a process that imported triton with "
                       "TRITON_INTERPRET=1; run compile_for in one without it (tests: a subprocess)")
    try:
        kernel = triton.compile(source, target=ARCHS[arch].target, options=options)
    except Exception as error:  # CompilationError, PTXASError, MLIR pass failures alike
        raise AotError(f"Triton could not compile {name} for {arch}: {type(error).__name__}: {error}") from error
    ptx, cubin, metadata = kernel.asm["ptx"], kernel.asm["cubin"], kernel.metadata

    with tempfile.TemporaryDirectory(prefix="minialign-aot-") as tmp:
        ptx_path, cubin_path = Path(tmp) / f"{name}.ptx", Path(tmp) / f"{name}.cubin"
        ptx_path.write_text(ptx)
        cubin_path.write_bytes(cubin)
        # Triton's make_cubin flags (line info only changes debug sections), so the counts are
        # those of the cubin it built.
        fmad = [] if metadata.enable_fp_fusion else ["--fmad=false"]
        extra = metadata.ptx_options.split() if metadata.ptx_options else []
        log = _run_tool("ptxas", ["-lineinfo", *fmad, "-v", *extra, f"--gpu-name={arch}", str(ptx_path),
                                  "-o", str(Path(tmp) / "check.cubin")], name, arch)
        # nvdisasm rather than cuobjdump -sass: it prints labels (".L_x_3:") and branch targets
        # by label ("BRA `(.L_x_3)"), where cuobjdump prints raw addresses; loops need labels.
        sass = _run_tool("nvdisasm", ["-c", str(cubin_path)], name, arch)

    start = log.find(f"entry function '{metadata.name}'")
    entry = log[start:] if start >= 0 else log  # skip lines about other functions, if any
    return Compiled(
        arch=arch, kernel_name=metadata.name, num_warps=metadata.num_warps, ptx=ptx, cubin=cubin, sass=sass,
        registers_per_thread=_ptxas_number(entry, r"Used (\d+) registers", name, arch),
        spill_store_bytes=_ptxas_number(entry, r"(\d+) bytes spill stores", name, arch),
        spill_load_bytes=_ptxas_number(entry, r"(\d+) bytes spill loads", name, arch),
        shared_bytes_per_block=metadata.shared, mix=instruction_mix(sass))


def write_asm(compiled: Compiled, directory: str | os.PathLike, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.<arch>.ptx`` and ``<stem>.<arch>.sass`` into ``directory``; return both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ptx_path, sass_path = directory / f"{stem}.{compiled.arch}.ptx", directory / f"{stem}.{compiled.arch}.sass"
    ptx_path.write_text(compiled.ptx)
    sass_path.write_text(compiled.sass)
    return ptx_path, sass_path
