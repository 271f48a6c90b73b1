"""Prototype (measurement only, not a kernel of the project): 5x5 stride-1 depthwise conv on tensor cores.

Per kernel row i, a block-diagonal Toeplitz GEMM: A[m, (q, c')] = x[row(m) + i - 2, col0(m) + q - 2, c']
(segment m: RUN = 4 output pixels of one row, Q = 8 input pixels x CB = 4 channels, K = 32, contiguous
channels so loads are 8-byte vectors), B_i[(q, c'), (r, c)] = w[c, i, q - r] if c == c' and 0 <= q - r < 5
(N = RUN x CB = 16), built by the launcher (``toeplitz``) in bfloat16 as hi + lo (SPLIT=2: taps to
~2^-17 relative; SPLIT=1 rounds the taps to bfloat16). A tile is IMG_T images x SLOTS segments
(M = 256), so the SE sums reduce per image without atomics per row. On sm_90a Triton lowers each
tl.dot to HGMMA.64x16x16 with A staged through shared memory. Checked under the interpreter
(float32) by check_mma_interpreter.py; never run on a GPU.
"""
import torch, triton, triton.language as tl

@triton.jit
def _dw5_mma_kernel(x_ptr, b_ptr, scale_ptr, shift_ptr, y_ptr, sums_ptr,
                    H: tl.constexpr, W: tl.constexpr, C: tl.constexpr, K: tl.constexpr, PAD: tl.constexpr,
                    RUN: tl.constexpr, CB: tl.constexpr, SLOTS: tl.constexpr, SPLIT: tl.constexpr, IMG_T: tl.constexpr, FAST_SILU: tl.constexpr,
                    B_TOTAL):
    Q: tl.constexpr = RUN + K - 1
    KK: tl.constexpr = Q * CB
    NN: tl.constexpr = RUN * CB
    SPR: tl.constexpr = (W + RUN - 1) // RUN
    SEGS: tl.constexpr = H * SPR
    TPI: tl.constexpr = (SEGS + SLOTS - 1) // SLOTS
    BM: tl.constexpr = SLOTS * IMG_T
    pid_c = tl.program_id(0)
    pid_b = tl.program_id(1)
    c0 = pid_c * CB
    kk = tl.arange(0, KK)[None, :]
    q = kk // CB
    ck = kk % CB
    n = tl.arange(0, NN)[None, :]
    r = n // CB
    cn = n % CB
    # B operands: [K, SPLIT, KK, NN] bf16 per channel block, precomputed
    bk = tl.arange(0, KK)[:, None]
    boff = bk * NN + n
    bbase = b_ptr + pid_c * (K * SPLIT * KK * NN)
    Bs = ()
    for i in tl.static_range(K):
        for s in tl.static_range(SPLIT):
            Bs = Bs + (tl.load(bbase + (i * SPLIT + s) * KK * NN + boff),)
    scale = tl.load(scale_ptr + c0 + cn)
    shift = tl.load(shift_ptr + c0 + cn)
    mrow = tl.arange(0, BM)[:, None]
    b = pid_b * IMG_T + mrow // SLOTS  # [BM, 1] image of each row
    slot = mrow % SLOTS
    b_ok = b < B_TOTAL
    x_img = x_ptr + b.to(tl.int64) * (H * W * C) + c0
    y_img = y_ptr + b.to(tl.int64) * (H * W * C) + c0
    total = tl.zeros((BM, NN), dtype=tl.float32)
    for t in range(TPI):
        seg = t * SLOTS + slot
        oy = seg // SPR
        ox0 = (seg % SPR) * RUN
        col = ox0 + q - PAD
        live = (seg < SEGS) & b_ok
        ok_col = (col >= 0) & (col < W) & live
        acc = tl.zeros((BM, NN), dtype=tl.float32)
        for i in tl.static_range(K):
            iy = oy + i - PAD
            ok = ok_col & (iy >= 0) & (iy < H)
            a = tl.load(x_img + (iy * W + col) * C + ck, mask=ok, other=0.0)
            for s in tl.static_range(SPLIT):
                acc = tl.dot(a, Bs[i * SPLIT + s], acc)
        z = acc * scale + shift
        if FAST_SILU:  # SiLU = h + h tanh(h), h = z / 2: 3 instructions, tanh.approx.f32's error
            h = z * 0.5
            th = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [h], dtype=tl.float32,
                                           is_pure=True, pack=1)
            z = tl.fma(h, th, h)
        else:  # the production kernel's SiLU: z * rsqrt(1 + 2^(-z log2 e))^2, 6 instructions
            inv_sqrt = tl.math.rsqrt(1.0 + tl.exp2(z * -1.4426950408889634))
            z = z * inv_sqrt * inv_sqrt
        ox = ox0 + r
        out_ok = live & (ox < W)
        tl.store(y_img + (oy * W + ox) * C + cn, z.to(y_ptr.dtype.element_ty), mask=out_ok)
        total += tl.where(out_ok, z, 0.0)
    per_img = tl.sum(tl.reshape(total, (IMG_T, SLOTS, RUN, CB)), axis=1)  # [IMG_T, RUN, CB]
    per_c = tl.sum(per_img, axis=1)  # [IMG_T, CB]
    bi = pid_b * IMG_T + tl.arange(0, IMG_T)[:, None]
    tl.atomic_add(sums_ptr + bi * C + c0 + tl.arange(0, CB)[None, :], per_c, mask=bi < B_TOTAL)


def toeplitz(weight, CB, RUN, split):
    C, _, k, _ = weight.shape
    Q = RUN + k - 1
    w = weight[:, 0].to(torch.float32)  # [C, k, k]
    q = torch.arange(Q)[:, None]; r = torch.arange(RUN)[None, :]
    d = q - r
    valid = (d >= 0) & (d < k)
    dd = d.clamp(0, k - 1)
    T = w[:, :, dd] * valid  # [C, k, Q, RUN]
    T = T.reshape(C // CB, CB, k, Q, RUN)
    eye = torch.eye(CB)
    # B[cb, i, (q, c'), (r, c)] = T[cb, c, i, q, r] * (c == c')
    Bm = torch.einsum("bciqr,dc->biqdrc", T, eye).reshape(C // CB, k, Q * CB, RUN * CB)
    hi = Bm.to(torch.bfloat16)
    parts = [hi]
    if split == 2:
        parts.append((Bm - hi.float()).to(torch.bfloat16))
    return torch.stack(parts, 2).contiguous()


def launch(x, weight, scale, shift, *, stride, padding, CB=4, RUN=4, SLOTS=32, SPLIT=2, IMG_T=8, FAST_SILU=False, num_warps=4, num_stages=1):
    B, H, W, C = x.shape
    k = weight.shape[-1]
    if x.device.type == "meta":
        Bm = torch.empty((C // CB, k, SPLIT, (RUN + k - 1) * CB, RUN * CB), dtype=torch.bfloat16, device="meta")
    else:
        Bm = toeplitz(weight, CB, RUN, SPLIT).to(x.device)
    y = torch.empty_like(x)
    sums = torch.zeros((B, C), dtype=torch.float32, device=x.device)
    grid = (C // CB, triton.cdiv(B, IMG_T), 1)
    _dw5_mma_kernel[grid](x, Bm, scale, shift, y, sums, H=H, W=W, C=C, K=k, PAD=padding[0], RUN=RUN, CB=CB,
                          SLOTS=SLOTS, SPLIT=SPLIT, IMG_T=IMG_T, FAST_SILU=FAST_SILU, B_TOTAL=B, num_warps=num_warps, num_stages=num_stages)
    return y, sums
