# %% [markdown]
# # 8. The kernel lab: a kernel compiled for an H100, on a laptop
#
# Triton compiles for a GPU named by its architecture; the GPU itself is only needed to run the
# result. This tutorial records the LayerNorm launch that BERT's layers make, compiles it for
# `sm_90a` (H100), reads the machine code, and predicts its time with a roofline model, without
# a GPU. `minialign kernels report` does the same for every kernel align-base launches; see
# docs/kernels/lab.md.
#
# It needs the `[gpu]` extra (torch, triton) and a Python started *without* `TRITON_INTERPRET=1`
# (the interpreter replaces the compiler). About 10 seconds.

# %%
import torch

from minialign.kernels import aot, plan, report
from minialign.kernels.layer_norm import layer_norm

# %% [markdown]
# ## 1. Record a launch
#
# The launcher runs as usual on *meta* tensors (a shape, a dtype, strides, no memory), and
# `plan.recording` stops Triton's JIT just before it compiles: what it would have compiled is
# kept. One BERT-base LayerNorm over 256 texts of 64 tokens, with the residual added in:

# %%
def meta(*shape):
    return torch.empty(shape, dtype=torch.bfloat16, device="meta")


launches = []
with plan.recording("sm_90a", launches, ["text"]):
    layer_norm(meta(256 * 64, 768), meta(768), meta(768), 1e-12, residual=meta(256 * 64, 768))
launch = launches[0]
print(launch.kernel, "grid", launch.grid, "warps", launch.options["num_warps"])
print("compiled in:", launch.constants)

# %% [markdown]
# ## 2. Compile it for the H100 and read the SASS
#
# `aot.compile_for` runs Triton's whole pipeline (TTIR, TTGIR, LLVM IR, PTX) and NVIDIA's `ptxas`
# to a cubin, then disassembles it. Registers per thread decide how many blocks fit on an SM;
# the width of the global loads says whether each thread reads 16 bytes at a time.

# %%
compiled = aot.compile_for(launch.fn, launch.signature, launch.constexprs, launch.attrs, launch.options, "sm_90a")
print("registers per thread:", compiled.registers_per_thread, " spilled bytes:", compiled.spill_store_bytes)
occupancy = compiled.occupancy()
print("blocks per SM:", occupancy.blocks_per_sm, "limited by", occupancy.limited_by)
mix = compiled.mix
print("SASS instructions:", mix.total, " by class:", {k: v for k, v in mix.by_class.items() if v})
print("global loads by bytes per thread:", mix.global_load_widths)
print("\n".join(line.strip() for line in compiled.sass.splitlines() if "LDG" in line))  # print(compiled.sass): all of it

# %% [markdown]
# ## 3. Predict its time
#
# The op must read x, the residual, gamma and beta and write y: that many bytes at the H100's
# 3.35 TB/s. Its arithmetic and the instructions its warps issue give two more lower bounds;
# the largest is the prediction.

# %%
h100 = report.DEVICES["h100"]
per_warp, known = report.issued_per_warp(launch, mix)
p = report.predict(launch, per_warp, compiled.num_warps, occupancy.blocks_per_sm, False, h100)
print(f"bytes {p['bytes']:,}  FLOPs {p['flops']:,}  warp-instructions {p['warp_instructions']:,}")
print(f"memory {p['memory_seconds'] * 1e6:.1f} us, math {p['math_seconds'] * 1e6:.1f} us, "
      f"issue {p['issue_seconds'] * 1e6:.1f} us -> {p['seconds'] * 1e6:.1f} us, limited by {p['limited_by']}")
assert p["limited_by"] == "memory"  # a LayerNorm moves 6 bytes for every ~8 FLOPs: bandwidth-bound
assert compiled.spill_store_bytes == 0 and 16 in mix.global_load_widths  # 16-byte loads, no spills
