# %% [markdown]
# # 8. The kernel lab: tutorial 6's kernel compiled for an H100, on a laptop
#
# Triton compiles for a GPU named by its architecture; the GPU itself is only needed to run the
# result. This tutorial takes the bias + SiLU kernel of tutorial 6, compiles it for `sm_90a`
# (H100) without a GPU, reads the machine code (SASS), changes its block size and watches the
# registers and instructions move, then predicts its time with a roofline model.
# `minialign kernels report` does the same for every kernel align-base launches; see
# docs/kernels/lab.md.
#
# It needs the `[gpu]` extra (torch, triton) and a Python started *without* `TRITON_INTERPRET=1`
# (the interpreter replaces the compiler). About half a minute.

# %%
import triton
import triton.language as tl

from minialign.kernels import aot, report
from minialign.kernels.plan import Launch


# %% [markdown]
# ## 1. The kernel, as tutorial 6 wrote it
#
# Each program handles `BLOCK_ROWS` rows (pixels) of a channels-last `[N, C]` activation and all
# of its C channels: load, add the bias, SiLU in float32, store.

# %%
@triton.jit
def bias_silu_kernel(
    x_ptr,  # [N, C] activation, contiguous (row stride C)
    bias_ptr,  # [C]
    out_ptr,  # [N, C] output, contiguous
    N,  # rows (pixels)
    C: tl.constexpr,  # channels
    BLOCK_ROWS: tl.constexpr,  # rows per program
    BLOCK_C: tl.constexpr,  # next power of two >= C
):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)  # [BLOCK_ROWS]
    cols = tl.arange(0, BLOCK_C)  # [BLOCK_C]
    inside = (rows[:, None] < N) & (cols[None, :] < C)  # [BLOCK_ROWS, BLOCK_C]
    offsets = rows[:, None] * C + cols[None, :]
    z = tl.load(x_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
    z += tl.load(bias_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)[None, :]
    y = z / (1 + tl.exp(-z))  # SiLU
    tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=inside)


# %% [markdown]
# ## 2. Compile it for the H100, at three block sizes
#
# A launch on the GPU would specialise the kernel for its arguments; here we say it ourselves:
# every argument's type (bfloat16 pointers, a 32-bit N), the compile-time constants, and that the
# pointers are 16-byte aligned (`tt.divisibility`, what the JIT finds for a fresh allocation).
# The shape is the stem's output in align-base: 64 images of 144 x 144 pixels, 64 channels.

# %%
N, C = 64 * 144 * 144, 64
signature = {"x_ptr": "*bf16", "bias_ptr": "*bf16", "out_ptr": "*bf16", "N": "i32",
             "C": "constexpr", "BLOCK_ROWS": "constexpr", "BLOCK_C": "constexpr"}
aligned = {(i,): [["tt.divisibility", 16]] for i in (0, 1, 2, 3)}  # the pointers, and N (a multiple of 16)
compiled = {}
for block_rows in (16, 64, 256):
    constants = {(4,): C, (5,): block_rows, (6,): triton.next_power_of_2(C)}
    k = aot.compile_for(bias_silu_kernel, signature, constants, aligned, {"num_warps": 4}, "sm_90a")
    compiled[block_rows] = k
    print(f"BLOCK_ROWS {block_rows:3}: {k.registers_per_thread:3} registers, {k.spill_store_bytes} B spilled, "
          f"{k.mix.total:4} SASS instructions, global loads by bytes per thread {k.mix.global_load_widths}")

# %% [markdown]
# More rows per program: more registers (each thread holds more of the tile) and more
# instructions per program, but not per element. The loads are `LDG.E.128`: 16 bytes, eight
# bfloat16 channels, per thread and instruction, the widest a thread can load.

# %%
k = compiled[64]
print("\n".join(line.strip() for line in k.sass.splitlines() if "LDG" in line or "MUFU" in line))
print({name: n for name, n in k.mix.by_class.items() if n})

# %% [markdown]
# ## 3. Predict its time
#
# The op reads x and the bias and writes y: at the H100's 3.35 TB/s that is the memory bound.
# The math (an exp and a few FMAs per element) and the instructions its warps issue are the two
# other bounds; the largest is the prediction, a lower bound on the real time.

# %%
h100 = report.DEVICES["h100"]
for block_rows, k in compiled.items():
    # Counted as the batchnorm kernel is: x and a per-channel vector read, y written, 2 FLOPs an element.
    launch = Launch(kernel="_batchnorm_act_kernel", fn=bias_silu_kernel, signature=signature, constexprs={},
                    attrs=aligned, options={"num_warps": 4, "num_stages": 3}, grid=(triton.cdiv(N, block_rows), 1, 1),
                    scalars={"N": N}, constants={"HAS_RESIDUAL": False},
                    tensors={"x_ptr": ((N, C), "bfloat16", (C, 1)), "scale_ptr": ((C,), "bfloat16", (1,)),
                             "y_ptr": ((N, C), "bfloat16", (C, 1))}, tower="tutorial")
    per_warp, _ = report.issued_per_warp(launch, k.mix)
    p = report.predict(launch, per_warp, k.num_warps, k.occupancy().blocks_per_sm, False, h100)
    print(f"BLOCK_ROWS {block_rows:3}: memory {p['memory_seconds'] * 1e6:6.1f} us, math {p['math_seconds'] * 1e6:5.1f} us, "
          f"issue {p['issue_seconds'] * 1e6:6.1f} us -> {p['seconds'] * 1e6:6.1f} us, limited by {p['limited_by']}")
assert compiled[64].spill_store_bytes == 0 and 16 in compiled[64].mix.global_load_widths
