"""The kernel lab's report: every kernel align-base launches, compiled for a named GPU, read and timed on paper.

``minialign kernels report`` runs this module. No GPU is needed: ``plan.py`` records what one
forward pass launches (every distinct specialisation, from the model's own code), ``aot.py``
compiles each for ``sm_90a`` (H100/H200) or ``sm_80`` (A100) and reads registers, spills, shared
memory and the SASS, and this module adds what each launch must move and compute and the time a
roofline model predicts.

The workloads ("towers"): 64 images of 289 x 289 through the vision tower; 256 texts of 64 tokens
through the text tower, padded (every token computed); and 256 captions of 8 to 20 tokens
(``plan.CAPTIONS``) through it packed, the real tokens only (``AlignTextModel(..., packed=True)``).

The roofline model, per launch (a lower bound on the time, not a measurement):

    t = max(bytes / HBM bandwidth,                                  memory
            FLOPs / peak,                                            math
            issued warp-instructions / (SMs x 4 schedulers x clock))  issue, in waves (below)

- bytes: the minimum the op must move -- each input read once, each output written once
  (``bytes_and_flops``); caches, re-reads of a tile by several programs and partial sectors are
  not counted, so real kernels move more.
- FLOPs: the op's arithmetic (a multiply-add is 2). The peak is the tensor cores' for the dtype
  when the SASS has tensor-core instructions (HMMA/HGMMA), else the FP32 vector peak (float32
  ``tl.dot`` runs in true fp32 here, "ieee", not on tensor cores).
- issue: every SASS instruction a warp executes is one warp-instruction; each of an SM's 4
  schedulers issues at most one per clock, and one warp at most one per clock. The programs run
  in waves of (SMs x resident blocks per SM), so a small grid or a last partial wave leaves
  schedulers idle (``predict``). The count per warp is the static SASS count with each loop
  body counted once per trip (``issued_per_warp``), so it is an estimate: predicated-off
  instructions count, and stalls (memory latency, barriers, tensor-core pipelines) are not
  modelled.
- Launch overhead, clock throttling and caches are not in the time.

A GEMM row is also priced as its bare GEMM -- the same A and W, no epilogue, the tile the
launcher picks for that (``plan.gemm_variant``) -- so the report says what each fused epilogue
costs (``epilogue_overhead``).

Published figures of each device (``DEVICES``): NVIDIA's H100 SXM5 and A100 SXM4 datasheets
(dense, no sparsity) and the boost clocks of their architecture whitepapers.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .plan import Launch


@dataclass(frozen=True)
class Device:
    name: str
    arch: str
    hbm_bytes_per_s: float
    bf16_tensor_flops: float  # dense bfloat16 / float16 tensor-core peak
    tf32_tensor_flops: float
    fp32_vector_flops: float  # FP32 on the CUDA cores (FMA = 2 FLOPs)
    sms: int
    clock_hz: float  # boost clock

    @property
    def issue_rate(self) -> float:
        """Warp-instructions per second the whole GPU can issue: 4 schedulers per SM, one each per clock."""
        return self.sms * 4 * self.clock_hz


DEVICES = {
    "h100": Device("H100 SXM", "sm_90a", 3.35e12, 989e12, 494.5e12, 66.9e12, 132, 1.98e9),
    "a100": Device("A100 SXM", "sm_80", 2.0e12, 312e12, 156e12, 19.5e12, 108, 1.41e9),
}

# What one align-base forward achieves on an H100 in bfloat16 with transformers (images/s and
# texts/s at batch 64 and 256 x 64 tokens), the anchors the prediction is read against.
MEASURED_ANCHORS = {
    "vision": {"transformers eager": 1761.0, "transformers + torch.compile": 2087.0},
    "text": {"transformers eager": 20050.0, "transformers + torch.compile": 30840.0},
}

_ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2, "int64": 8, "int32": 4}
PACKED_BATCH = 256  # captions in the packed text workload: as many texts as the padded one


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _nbytes(launch: Launch, name: str) -> int:
    """Bytes of tensor argument ``name`` read or written once (0 when the argument is not a tensor)."""
    if name not in launch.tensors:
        return 0
    shape, dtype, _ = launch.tensors[name]
    return math.prod(shape) * _ITEMSIZE[dtype]


def bytes_and_flops(launch: Launch) -> tuple[int, int, str]:
    """(bytes, FLOPs, "tensor" or "vector"): the minimum one launch must move and compute.

    gemm        A [M, K], W [N, K] read, C [M, N] written; residual, SE gate, scale/shift read
                when present. 2 M N K FLOPs on tensor cores (the epilogue is not counted). With
                a LayerNorm: its gamma and beta read, and the tiles' row statistics [2, tiles, M]
                float32 written and read once. The pre-norm rows the last tile of a row block
                reads back and overwrites are not counted again: they are C, just written, in L2.
    attention   q, k, v read, the output written, the mask read: 4 B T H values. QK^T and PV:
                2 * 2 * B * heads * T^2 * D FLOPs. Packed: 4 N H values and cu_seqlens, and
                2 * 2 * heads * D * sum_b L_b^2 FLOPs (each sequence against itself; the lengths
                L_b are the recorded cu_seqlens).
    depthwise   x read, y written, taps/scale/shift read, the SE sums written when asked.
                2 k^2 FLOPs per output on the CUDA cores (the batchnorm and SiLU are not counted).
    se_gate     the sums read, both weights and biases read, the gate written. 2 * 2 * B * C * S.
    layer_norm  x (and the residual) read, y written, gamma and beta read. 7 FLOPs per element
                (mean, centring, variance, scale, gamma, beta; +1 with a residual).
    batchnorm   x (and the residual) read, y written, scale/shift read. 2 FLOPs per element.
    """
    k, c, s = launch.kernel, launch.constants, launch.scalars
    b = lambda *names: sum(_nbytes(launch, n) for n in names)  # noqa: E731
    if k == "_gemm_epilogue_kernel":
        M, N, K = s["M"], s["N"], c["K"]
        return (b("a_ptr", "w_ptr", "c_ptr", "a_scale_ptr", "col_scale_ptr", "col_shift_ptr", "residual_ptr",
                  "norm_weight_ptr", "norm_bias_ptr") + 2 * b("stats_ptr"), 2 * M * N * K, "tensor")
    if k == "_attention_kernel" and "cu_seqlens_ptr" in launch.tensors:
        (_, heads, D), cu = launch.tensors["q_ptr"][0], launch.values["cu_seqlens_ptr"]
        squares = sum((end - start) ** 2 for start, end in zip(cu[:-1], cu[1:]))
        return b("q_ptr", "k_ptr", "v_ptr", "cu_seqlens_ptr", "out_ptr"), 4 * heads * D * squares, "tensor"
    if k == "_attention_kernel":
        (B, heads, T, D) = launch.tensors["q_ptr"][0]
        return b("q_ptr", "k_ptr", "v_ptr", "mask_ptr", "out_ptr"), 4 * B * heads * T * T * D, "tensor"
    if k == "_depthwise_conv_bn_silu_kernel":
        B, Ho, Wo, C = launch.tensors["y_ptr"][0]
        sums = b("sums_ptr") if c["WRITE_SUMS"] else 0  # without sums, y stands in for the pointer
        return b("x_ptr", "w_ptr", "scale_ptr", "shift_ptr", "y_ptr") + sums, 2 * c["K"] ** 2 * B * Ho * Wo * C, "vector"
    if k == "_se_gate_kernel":
        B = launch.tensors["sums_ptr"][0][0]
        return (b("sums_ptr", "w_r_ptr", "b_r_ptr", "w_e_ptr", "b_e_ptr", "gate_ptr"),
                4 * B * c["C"] * c["S"], "vector")
    if k == "_layer_norm_kernel":
        rows, H = launch.programs, s["H"]
        residual = b("res_ptr") if c["HAS_RESIDUAL"] else 0
        return b("x_ptr", "w_ptr", "b_ptr", "y_ptr") + residual, (7 + bool(residual)) * rows * H, "vector"
    if k == "_batchnorm_act_kernel":
        n = math.prod(launch.tensors["x_ptr"][0])
        residual = b("res_ptr") if c.get("HAS_RESIDUAL") else 0
        return b("x_ptr", "scale_ptr", "shift_ptr", "y_ptr") + residual, 2 * n, "vector"
    raise ValueError(f"no byte and FLOP count for kernel {k}")


# The loops each kernel's source has, outermost first, with their trip counts.
SOURCE_LOOPS = {
    "_gemm_epilogue_kernel": lambda c: [_cdiv(c["K"], c["BLOCK_K"])],
    "_attention_kernel": lambda c: [c["NUM_KEY_BLOCKS"]] if c["NUM_KEY_BLOCKS"] > 1 else [],
    # the reduce over C, then the expand over the program's channels (see STORING_LOOPS)
    "_se_gate_kernel": lambda c: [_cdiv(c["C"], c["BLOCK_K"]), c["CHANNELS_PER_PROGRAM"] // c["BLOCK_C"]],
    "_depthwise_conv_bn_silu_kernel": lambda c: [],  # input rows, pixels and taps are unrolled (static_range)
    "_layer_norm_kernel": lambda c: [],
    "_batchnorm_act_kernel": lambda c: [],
}


def _gemm_marker(launch: Launch, opcodes: list[str]) -> tuple[str, int, int]:
    """(opcode prefix, how many of them one warp issues over the whole K loop, how many per K
    step) for the GEMM: the multiply-accumulates of one program, BLOCK_M x BLOCK_N x BLOCK_K per
    K step, divided by what one instruction does for one warp. HGMMA.64xNx16 (sm_90a) does
    64 x N x 16 for the 4 warps of a warpgroup, each of which issues it; HMMA.16816 (sm_80) does
    16 x 8 x 16 per warp; without tensor cores (float32 in "ieee" precision) an FFMA does one per
    thread, 32 per warp."""
    c = launch.constants
    steps = _cdiv(c["K"], c["BLOCK_K"])
    macs = c["BLOCK_M"] * c["BLOCK_N"] * c["BLOCK_K"] * steps
    warps = launch.options["num_warps"]
    hgmma = next((op for op in opcodes if op.startswith("HGMMA.")), None)
    if hgmma is not None:
        m, n, k = (int(x) for x in hgmma.split(".")[1].split("x"))
        prefix, needed = "HGMMA", macs // (m * n * k) // (warps // 4)
    elif any(op.startswith("HMMA.16816") for op in opcodes):
        prefix, needed = "HMMA", macs // (16 * 8 * 16) // warps
    else:
        prefix, needed = "FFMA", macs // 32 // warps
    return prefix, needed, needed // steps


# For a kernel whose loop the compilers may unroll or peel (ptxas unrolls long loops by 4 and
# puts the rest after the loop; Triton's pipeliner peels iterations into a prologue), an
# instruction whose total count per warp the source fixes, and its count per source iteration:
# the SASS loop's trip count is then (that total - its copies outside the loop) / its copies
# inside. Outside the loop, fewer than one iteration's worth of them are not copies (the GELU's
# polynomial in the float32 GEMM's epilogue is FFMAs too) and are set aside.
LOOP_MARKERS = {"_gemm_epilogue_kernel": _gemm_marker}

# For a kernel with several source loops of constant trip counts, which of them (in SOURCE_LOOPS'
# order) store to global memory. ptxas unrolls a loop of a few trips completely (its copies are
# then straight code, counted as they stand) and may keep another, so the SASS loops are matched
# to the source loops by whether they store, not by position. The flags must differ.
STORING_LOOPS = {"_se_gate_kernel": (False, True)}  # the reduce only loads; the expand stores gates

# For a kernel that adds parts as it loads them (the SE gate: the depthwise kernel's PARTS partial
# sums, one [BLOCK_K, BLOCK_B] float32 tile each, inside every reduce step), (the parts after the
# first, bytes one part is per thread). ptxas unrolls that loop completely when there are few parts
# (straight code, counted as it stands) and otherwise keeps a loop unrolled u times, the rest of the
# parts copied outside it. Such a loop has global loads and neither stores nor tensor-core
# instructions; u is its load bytes over one part's, and it runs (parts after the first) // u times
# per trip of the loop around it (once when it is outermost).
PART_LOOPS = {"_se_gate_kernel": lambda c, warps: (c["PARTS"] - 1, c["BLOCK_K"] * c["BLOCK_B"] * 4 // (32 * warps))}


def _part_loops(launch: Launch, mix) -> dict[int, int] | None:
    """For each of the kernel's SASS loops over parts (``PART_LOOPS``), by index in ``mix.loops``:
    what it issues per warp beyond its first trip, each time it is reached. None when a loop's
    unrolling cannot be read."""
    if launch.kernel not in PART_LOOPS:
        return {}
    parts, part_bytes = PART_LOOPS[launch.kernel](launch.constants, launch.options["num_warps"])
    if parts == 0:  # one part: there is no loop over parts
        return {}
    beyond = {}
    for i, loop in enumerate(mix.loops):
        if not loop.by_class.get("global_load") or loop.by_class.get("global_store") or loop.by_class.get("tensor_core"):
            continue
        unroll, rest = divmod(loop.global_load_bytes_per_thread, part_bytes)
        if rest or not 1 <= unroll <= parts:
            return None
        beyond[i] = (parts // unroll - 1) * loop.total
    return beyond


def issued_per_warp(launch: Launch, mix) -> tuple[int, bool]:
    """(warp-instructions one warp of one program issues, whether the loops' trip counts are known).

    - No loop in the SASS: every source loop was unrolled; the static count is the count.
    - One outermost SASS loop and a marker for the kernel (``LOOP_MARKERS``): the loop body counts
      once per trip, the trips from the marker.
    - As many outermost SASS loops as source loops of more than one trip (``SOURCE_LOOPS``): each
      body counts once per trip of its source loop (no unrolling assumed).
    - For a kernel in ``STORING_LOOPS``, instead: each outermost SASS loop counts once per trip of
      the source loop (of more than one trip) that stores to global memory as it does; a source
      loop with no SASS loop was unrolled, its copies counted as they stand.
    - A loop over parts (``PART_LOOPS``) counts its trips once each time it is reached: once when
      it is outermost, once per trip of the loop around it otherwise.
    - Otherwise the static count, marked unknown: a lower bound.
    Any other inner loop counts once per outer trip. Alignment padding after the last instruction
    is never issued and is not counted.
    """
    static = mix.total - mix.by_class.get("padding", 0)
    part_loops = _part_loops(launch, mix)
    if part_loops is None:
        return static, False
    outer = [i for i, loop in enumerate(mix.loops) if loop.depth == 0 and i not in part_loops]
    trips = {}  # outermost loop index -> its trips
    if launch.kernel in LOOP_MARKERS and len(outer) == 1:
        prefix, needed, per_iteration = LOOP_MARKERS[launch.kernel](launch, mix.opcodes)
        loop = mix.loops[outer[0]]
        inside = sum(op.startswith(prefix) for op in mix.opcodes[loop.start:loop.end + 1])
        outside = sum(op.startswith(prefix) for op in mix.opcodes) - inside
        outside -= outside % per_iteration  # fewer than one iteration: not copies of one
        if not (inside and (needed - outside) % inside == 0 and needed - outside >= inside):
            return static, False
        trips[outer[0]] = (needed - outside) // inside
    elif outer:
        loops = SOURCE_LOOPS[launch.kernel](launch.constants)
        if launch.kernel in STORING_LOOPS:
            trips_by_stores = {stores: t for t, stores in zip(loops, STORING_LOOPS[launch.kernel]) if t > 1}
            stores = [mix.loops[i].by_class.get("global_store", 0) > 0 for i in outer]
            if len(set(stores)) < len(stores) or not all(s in trips_by_stores for s in stores):
                return static, False
            trips = {i: trips_by_stores[s] for i, s in zip(outer, stores)}
        else:
            source = [t for t in loops if t > 1]
            if len(outer) != len(source):
                return static, False
            trips = dict(zip(outer, source))
    issued = static + sum((t - 1) * mix.loops[i].total for i, t in trips.items())
    for i, beyond in part_loops.items():
        parent = mix.loops[i].parent
        if parent is not None and parent not in trips:  # inside a loop of unknown trips
            return static, False
        issued += beyond * (1 if parent is None else trips[parent])
    return issued, True


def outputs(launch: Launch) -> int:
    """Output elements of one launch: what "per output element" divides by."""
    out = {"_gemm_epilogue_kernel": "c_ptr", "_attention_kernel": "out_ptr", "_se_gate_kernel": "gate_ptr",
           "_depthwise_conv_bn_silu_kernel": "y_ptr", "_layer_norm_kernel": "y_ptr",
           "_batchnorm_act_kernel": "y_ptr"}[launch.kernel]
    return math.prod(launch.tensors[out][0])


def predict(launch: Launch, issued_per_warp: int, num_warps: int, blocks_per_sm: int, uses_tensor_cores: bool,
            device: Device) -> dict[str, Any]:
    """The roofline time of one launch on ``device`` (module docstring): the three limits, the
    largest, and which it is.

    The issue limit runs the programs in waves: the busiest SM gets ceil(programs / SMs) of them,
    ``blocks_per_sm`` at a time; in a wave its 4 schedulers share the resident warps'
    instructions, and one warp issues at most one instruction per clock. So a grid of a few
    programs (the SE gate's one per image) is timed by one warp's instruction stream, not by the
    whole GPU's issue rate.
    """
    nbytes, flops, kind = bytes_and_flops(launch)
    dtype = launch.tensors[next(iter(launch.tensors))][1]
    if kind == "tensor" and uses_tensor_cores:
        peak = device.bf16_tensor_flops if dtype in ("bfloat16", "float16") else device.tf32_tensor_flops
    else:
        peak = device.fp32_vector_flops
    per_sm = _cdiv(launch.programs, device.sms)
    resident = min(per_sm, max(blocks_per_sm, 1))
    waves = _cdiv(per_sm, resident)
    issue_clocks = waves * max(resident * num_warps * issued_per_warp / 4, issued_per_warp)
    limits = {"memory": nbytes / device.hbm_bytes_per_s, "math": flops / peak,
              "issue": issue_clocks / device.clock_hz}
    bound = max(limits, key=limits.get)
    return {"bytes": nbytes, "flops": flops, "warp_instructions": issued_per_warp * num_warps * launch.programs,
            "seconds": limits[bound], "limited_by": bound, **{f"{name}_seconds": t for name, t in limits.items()}}


def epilogue_overhead(seconds: float, memory_seconds: float, bare_seconds: float) -> dict[str, float]:
    """What a GEMM's fused epilogue costs, from predicted times: ``seconds`` of the GEMM with its
    epilogue, ``memory_seconds`` its memory limit alone, ``bare_seconds`` the same A and W with no
    epilogue (``plan.gemm_variant``).

    - ``epilogue_overhead``: ``seconds / bare_seconds - 1``, the whole price.
    - ``epilogue_overhead_beyond_bytes``: over ``max(bare_seconds, memory_seconds)`` instead: the
      price left once the bytes the epilogue must move are paid. A residual (or a gate) is an
      extra input no kernel can skip; when the GEMM is memory-bound it costs its bytes' time
      (a [M, 32] residual beside a [M, 32] A and C: +50%) however cheap the arithmetic.
    """
    return {"bare_seconds": bare_seconds, "epilogue_overhead": seconds / bare_seconds - 1,
            "epilogue_overhead_beyond_bytes": seconds / max(bare_seconds, memory_seconds) - 1}


def describe(launch: Launch) -> str:
    """A short name for a specialisation: the op's shape and the choices that were compiled in."""
    c, s = launch.constants, launch.scalars
    k = launch.kernel
    if k == "_gemm_epilogue_kernel":
        extras = [c["ACTIVATION"] or "", "gate" if "a_scale_ptr" in launch.tensors else "",
                  "residual" if "residual_ptr" in launch.tensors else "",
                  "layer_norm" if "norm_weight_ptr" in launch.tensors else ""]
        return (f"gemm M={s['M']} N={s['N']} K={c['K']} {' '.join(e for e in extras if e)} "
                f"tile {c['BLOCK_M']}x{c['BLOCK_N']}x{c['BLOCK_K']} w{launch.options['num_warps']} "
                f"s{launch.options['num_stages']}").replace("  ", " ")
    if k == "_depthwise_conv_bn_silu_kernel":
        B, Ho, Wo, C = launch.tensors["y_ptr"][0]
        return (f"depthwise {c['K']}x{c['K']} s{c['STRIDE']} {Ho}x{Wo}x{C} "
                f"block {c['BLOCK_R']} x {c['ROWS']}x{c['RUN']}px x {c['BLOCK_C']}ch")
    if k == "_se_gate_kernel":
        return (f"se_gate C={c['C']} S={c['S']} block {c['BLOCK_B']} img x {c['CHANNELS_PER_PROGRAM']} ch, "
                f"steps {c['BLOCK_K']}/{c['BLOCK_C']}")
    if k == "_attention_kernel" and "cu_seqlens_ptr" in launch.tensors:
        N, heads, D = launch.tensors["q_ptr"][0]
        B = launch.tensors["cu_seqlens_ptr"][0][0] - 1
        return f"attention packed B={B} N={N} heads={heads} D={D} block {c['BLOCK_M']}x{c['BLOCK_N']}"
    if k == "_attention_kernel":
        B, heads, T, D = launch.tensors["q_ptr"][0]
        return f"attention B={B} heads={heads} T={T} D={D} block {c['BLOCK_M']}x{c['BLOCK_N']}"
    if k == "_layer_norm_kernel":
        return f"layer_norm H={s['H']}{' +residual' if c['HAS_RESIDUAL'] else ''}"
    if k == "_batchnorm_act_kernel":
        return f"batchnorm+silu {'x'.join(map(str, launch.tensors['x_ptr'][0]))} (the backend folds it away)"
    return k


def compile_and_predict(own: list[Launch], device: Device):
    """Compile a specialisation (``own``: its launches) for ``device`` and predict each launch:
    (the ``aot.Compiled``, warp-instructions per warp, whether the loop trips are known, one
    ``predict`` dict per launch)."""
    from . import aot

    first = own[0]
    compiled = aot.compile_for(first.fn, first.signature, first.constexprs, first.attrs, first.options, device.arch)
    per_warp, loops_matched = issued_per_warp(first, compiled.mix)
    times = [predict(launch, per_warp, compiled.num_warps, compiled.occupancy().blocks_per_sm,
                     compiled.mix.by_class.get("tensor_core", 0) > 0, device) for launch in own]
    return compiled, per_warp, loops_matched, times


def analyse(device_name: str = "h100", dtype: str = "bfloat16", *, image_batch: int = 64, text_batch: int = 256,
            text_length: int = 64, packed_batch: int = PACKED_BATCH, config=None, asm_dir: str | None = None,
            progress=None, measure_on_gpu: bool = False) -> dict[str, Any]:
    """The report for one device and dtype, as a JSON-able dict: one row per specialisation and
    the totals per tower (module docstring): "vision", "text" (``text_batch`` texts padded to
    ``text_length`` tokens) and "text_packed" (``packed_batch`` captions of 8-20 tokens, packed:
    ``plan.caption_lengths``; 0 leaves it out). ``asm_dir``: also write each specialisation's PTX and
    SASS there. ``progress``: called with (done, total) after each compile. ``measure_on_gpu``:
    also time every launch on this machine's GPU (``measure``) and put the measured seconds beside
    the predicted ones, per specialisation and per tower. GEMM rows carry their bare GEMM's
    predicted time and tile (``bare_seconds``, ``bare_what``) and ``epilogue_overhead``'s ratios."""
    from . import aot, plan

    if device_name not in DEVICES:
        raise ValueError(f"device must be one of {tuple(DEVICES)}, got {device_name!r}")
    device = DEVICES[device_name]
    launches = plan.model_launches(config, arch=device.arch, dtype=dtype, image_batch=image_batch,
                                   text_batch=text_batch, text_length=text_length, packed_batch=packed_batch)
    launches += plan.unused_kernel_launches(arch=device.arch, dtype=dtype, image_batch=image_batch)
    groups = plan.specialisations(launches)
    rows: list[dict[str, Any]] = []
    for i, own in enumerate(groups):
        first = own[0]
        compiled, per_warp, loops_matched, times = compile_and_predict(own, device)
        if asm_dir is not None:
            aot.write_asm(compiled, asm_dir, f"{i:02d}_{first.tower}_{first.kernel.strip('_')}_{dtype}")
        mix, occupancy = compiled.mix, compiled.occupancy()
        rows.append({
            "index": i, "tower": first.tower, "kernel": first.kernel, "what": describe(first),
            "launches": len(own), "grid": list(first.grid), "num_warps": compiled.num_warps,
            "num_stages": first.options["num_stages"],
            "registers": compiled.registers_per_thread, "spill_store_bytes": compiled.spill_store_bytes,
            "spill_load_bytes": compiled.spill_load_bytes, "shared_bytes": compiled.shared_bytes_per_block,
            "blocks_per_sm": occupancy.blocks_per_sm, "occupancy_limited_by": list(occupancy.limited_by),
            "warp_occupancy": occupancy.warp_occupancy,
            "sass_instructions": mix.total - mix.by_class.get("padding", 0), "sass_by_class": dict(mix.by_class),
            "global_load_widths": {str(w): n for w, n in sorted(mix.global_load_widths.items())},
            "global_store_widths": {str(w): n for w, n in sorted(mix.global_store_widths.items())},
            "tensor_core_instructions": mix.by_class.get("tensor_core", 0),
            "loops_matched": loops_matched, "issued_per_warp": per_warp,
            "warp_instructions_per_output": sum(t["warp_instructions"] for t in times) / sum(map(outputs, own)),
            "bytes": sum(t["bytes"] for t in times), "flops": sum(t["flops"] for t in times),
            "seconds": sum(t["seconds"] for t in times),
            "memory_seconds": sum(t["memory_seconds"] for t in times),
            "limited_by": Counter(t["limited_by"] for t in times).most_common(1)[0][0],
        })
        if first.kernel == "_gemm_epilogue_kernel":  # the same GEMMs without their epilogues
            bare = plan.specialisations([plan.gemm_variant(launch, device.arch, bare=True) for launch in own])
            bare_seconds = sum(t["seconds"] for group in bare for t in compile_and_predict(group, device)[3])
            rows[-1].update(bare_what=describe(bare[0][0]),
                            **epilogue_overhead(rows[-1]["seconds"], rows[-1]["memory_seconds"], bare_seconds))
        if measure_on_gpu:
            rows[-1]["measured_seconds"] = sum(measure(launch) for launch in own)
            rows[-1]["measured_over_predicted"] = rows[-1]["measured_seconds"] / rows[-1]["seconds"]
        if progress is not None:
            progress(i + 1, len(groups))

    towers = {}
    for tower, batch, unit in (("vision", image_batch, "images/s"), ("text", text_batch, "texts/s"),
                               ("text_packed", packed_batch, "texts/s")):
        mine = [r for r in rows if r["tower"] == tower]
        if not batch:
            continue
        seconds, memory = sum(r["seconds"] for r in mine), sum(r["memory_seconds"] for r in mine)
        anchors = MEASURED_ANCHORS.get(tower, {}) if device_name == "h100" and dtype == "bfloat16" else {}
        towers[tower] = {"batch": batch, "launches": sum(r["launches"] for r in mine), "seconds": seconds,
                         "predicted_per_s": batch / seconds, "memory_bound_per_s": batch / memory, "unit": unit,
                         "measured_anchors_per_s": anchors}
        if measure_on_gpu:
            towers[tower]["measured_seconds"] = sum(r["measured_seconds"] for r in mine)
            towers[tower]["measured_per_s"] = batch / towers[tower]["measured_seconds"]
    return {"device": device.name, "arch": device.arch, "dtype": dtype,
            "device_figures": {"hbm_bytes_per_s": device.hbm_bytes_per_s, "bf16_tensor_flops": device.bf16_tensor_flops,
                               "tf32_tensor_flops": device.tf32_tensor_flops,
                               "fp32_vector_flops": device.fp32_vector_flops, "sms": device.sms,
                               "clock_hz": device.clock_hz, "issue_rate": device.issue_rate},
            "workload": {"image_batch": image_batch, "image_size": plan.IMAGE_SIZE, "text_batch": text_batch,
                         "text_length": text_length, "packed_batch": packed_batch,
                         "packed_tokens": sum(plan.caption_lengths(packed_batch))},
            "kernels": rows, "towers": towers}


def format_report(report: dict[str, Any]) -> str:
    """The report as text: one line per specialisation, then the towers against their anchors."""
    w = report["workload"]
    packed = (f", {w['packed_batch']} captions packed ({w['packed_tokens']} tokens)" if w.get("packed_batch") else "")
    lines = [f"{report['device']} ({report['arch']}), {report['dtype']}: align-base, "
             f"{w['image_batch']} images of {w['image_size']}px, {w['text_batch']} texts of {w['text_length']} tokens"
             + packed,
             "", f"{'#':>2} {'tower':11} {'specialisation':64} {'n':>3} {'regs':>4} {'spill':>5} {'smem':>5} "
             f"{'occ':>3} {'SASS':>5} {'TC':>3} {'LDG B':>6} {'w-ins/out':>9} {'us':>8} {'limit':6} "
             f"{'bare us':>8} {'epi %':>9}"]
    for row in report["kernels"]:
        widths = "/".join(row["global_load_widths"]) or "-"
        per_out = f"{'' if row['loops_matched'] else '>='}{row['warp_instructions_per_output']:.2f}"
        lines.append(
            f"{row['index']:>2} {row['tower']:11} {row['what'][:64]:64} {row['launches']:>3} {row['registers']:>4} "
            f"{row['spill_store_bytes']:>5} {row['shared_bytes'] // 1024:>4}K {row['blocks_per_sm']:>3} "
            f"{row['sass_instructions']:>5} {row['tensor_core_instructions']:>3} {widths:>6} {per_out:>9} "
            f"{row['seconds'] * 1e6:8.1f} {row['limited_by']:6}"
            + (f" {row['bare_seconds'] * 1e6:8.1f} {100 * row['epilogue_overhead']:+4.0f}/"
               f"{100 * row['epilogue_overhead_beyond_bytes']:+.0f}" if "bare_seconds" in row else ""))
    lines += ["", "columns: n launches per forward; regs per thread; spill bytes stored per thread; smem per block; "
              "occ blocks per SM; SASS static instructions; TC tensor-core instructions; LDG B bytes per global load "
              "instruction per thread; w-ins/out warp-instructions issued per output element (>= where a loop's "
              "trip count is unknown); us predicted microseconds for all n launches; bare us the same GEMMs without "
              "their epilogue (A and W alone, the launcher's tile for that); epi % the epilogue's price over the bare "
              "GEMM / over the larger of the bare GEMM and the row's own memory time (what is left once the bytes "
              "of a residual or gate are paid)", ""]
    for tower, t in report["towers"].items():
        anchors = ", ".join(f"{name} {value:,.0f}" for name, value in t["measured_anchors_per_s"].items())
        lines.append(f"{tower}: {t['launches']} launches, predicted {t['seconds'] * 1e3:.2f} ms = "
                     f"{t['predicted_per_s']:,.0f} {t['unit']} (memory roofline alone {t['memory_bound_per_s']:,.0f})"
                     + (f"; measured: {anchors}" if anchors else ""))
    return "\n".join(lines)


def measure(launch: Launch, device: str = "cuda") -> float:
    """Seconds one launch takes on the current GPU (``triton.testing.do_bench``, median), on random
    inputs of the recorded shapes, dtypes and strides: the calibration of the prediction. Integer
    tensors hold their recorded values (``Launch.values``: the padded workload's mask, all ones, and
    the packed attention's cu_seqlens), or ones where none was recorded."""
    import torch
    from triton.testing import do_bench

    args = []
    for name in launch.fn.arg_names:
        if name in launch.tensors:
            shape, dtype, strides = launch.tensors[name]
            storage = 1 + sum((size - 1) * stride for size, stride in zip(shape, strides))  # a broadcast view too
            base = torch.randn(storage, device=device).to(getattr(torch, dtype)) if dtype.startswith(("float", "bfloat")) \
                else torch.ones(storage, dtype=getattr(torch, dtype), device=device)
            if name in launch.values:
                base = torch.tensor(launch.values[name], dtype=getattr(torch, dtype), device=device)
            args.append(base.as_strided(shape, strides))
        elif name in launch.constants:
            args.append(launch.constants[name])
        else:
            args.append(launch.scalars.get(name))  # None for an absent optional pointer
    options = {k: launch.options[k] for k in ("num_warps", "num_stages")}
    return do_bench(lambda: launch.fn[launch.grid](*args, **options), return_mode="median") * 1e-3
