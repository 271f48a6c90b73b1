"""The fused-epilogue GEMM kernel against torch and against the reference ops it replaces.

One hand-computed case first; then hypothesis shapes (M, N, K of 1, odd, prime, and beyond one
tile, so tails, wrapping and grouped ordering all run) for every epilogue option alone and all
together; the squeeze-excitation A-scale over 1-3 images; strided views; the reference model pieces
(BERT's FFN, an MBConv block's expansion and projection); every GPU tile of ``CONFIGS``; the
activations' approximations on a dense grid against torch's exact functions, with the measured
error stated; extreme values; bad inputs.

Tolerances: the kernel is compared with ``gemm_reference`` (float32 math from the same inputs,
copying the kernel's one intermediate rounding, of the gated A), so the only differences are the
order of summation and, in bfloat16, the single rounding of the output:

    dtype     atol, rtol  why
    float32   1e-5, 1e-5  same math, different summation order over K <= 33 terms of O(1)
    bfloat16  2e-2, 2e-2  one rounding of the output to 8 mantissa bits (~4e-3 relative)
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import TOLERANCES, assert_close
from minialign.backends import reference
from minialign.kernels._checks import INTERPRETED, KernelInputError
from minialign.kernels.gemm import CONFIGS, gemm, gemm_reference
from strategies import seeds

# The interpreter evaluates exp(-x) with NumPy, which warns when it overflows to inf for very
# negative x -- the case the kernel's x / (1 + exp(-x)) form relies on (x / inf = -0).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")



def examples(n: int):
    """The profile's settings with ``n`` examples (or the profile's count, if larger: "thorough").

    The kernel fixtures (dtype, device) do not change between examples, so hypothesis may reuse
    them: that health check is off.
    """
    return settings(settings.default, max_examples=max(n, settings.default.max_examples),
                    suppress_health_check=[*settings.default.suppress_health_check,
                                           HealthCheck.function_scoped_fixture])


M_SIZES = st.sampled_from([1, 5, 17, 64])  # one row; odd; prime > one 16-row tile; two 32-row tiles
K_SIZES = st.sampled_from([1, 3, 16, 33])  # below tl.dot's 16; exactly one K step; a K tail
N_SIZES = st.sampled_from([1, 7, 32])  # one column; odd; exactly one interpreter tile
ACTS = st.sampled_from([None, "gelu", "gelu_tanh", "silu"])


def tol(dtype):
    return TOLERANCES[str(dtype).removeprefix("torch.")]


def randn(gen, *shape, device, dtype=torch.float32, scale=1.0, offset=0.0):
    """Seeded normal values, made in float32 on the CPU (the same numbers on every device)."""
    x = torch.randn(shape, generator=gen) * scale + offset
    return x.to(device=device, dtype=dtype)


def problem(seed, M, K, N, device, dtype):
    """Inputs of realistic magnitudes: activations O(1) with an offset, weights ~ 1/sqrt(K)."""
    g = torch.Generator().manual_seed(seed)
    return dict(
        a=randn(g, M, K, device=device, dtype=dtype, offset=0.5),
        w=randn(g, N, K, device=device, dtype=dtype, scale=K ** -0.5),
        bias=randn(g, N, device=device, dtype=dtype, scale=0.5),
        scale=1 + 0.2 * randn(g, N, device=device),  # folded BN: ~1, float32 as batchnorm_act's
        shift=randn(g, N, device=device, scale=0.5),
        residual=randn(g, M, N, device=device, dtype=dtype),
    )


# -- one case by hand ---------------------------------------------------------------------------


def test_hand_computed_2x2_with_bias_and_residual(kernel_device):
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]], device=kernel_device)
    w = torch.tensor([[1.0, 0.0], [1.0, 1.0]], device=kernel_device)  # [N, K]: out0 = x0, out1 = x0 + x1
    bias = torch.tensor([0.5, -1.0], device=kernel_device)
    residual = torch.tensor([[1.0, 1.0], [0.0, 0.0]], device=kernel_device)
    # a @ w^T = [[1, 3], [3, 7]]; + bias = [[1.5, 2], [3.5, 6]]; + residual = [[2.5, 3], [3.5, 6]]
    c = gemm(a, w, bias=bias, residual=residual)
    assert c.dtype == a.dtype and c.is_contiguous()
    assert_close(c, [[2.5, 3.0], [3.5, 6.0]], atol=0, rtol=0)


# -- hypothesis: each epilogue option alone, then all together -----------------------------------

OPTIONS = {
    "plain": {},
    "bias": {"bias"},
    "scale": {"scale"},
    "shift": {"shift"},
    "bn_affine": {"scale", "shift"},
    "residual": {"residual"},
    "gelu": {"act:gelu"},
    "gelu_tanh": {"act:gelu_tanh"},
    "silu": {"act:silu"},
    "a_scale": {"a_scale"},
}


@examples(40)
@given(M=M_SIZES, K=K_SIZES, N=N_SIZES, option=st.sampled_from(sorted(OPTIONS)), seed=seeds)
def test_each_epilogue_option_matches_torch(kernel_dtype, kernel_device, M, K, N, option, seed):
    p = problem(seed, M, K, N, kernel_device, kernel_dtype)
    kwargs = {}
    for item in OPTIONS[option]:
        if item.startswith("act:"):
            kwargs["activation"] = item[4:]
        elif item == "a_scale":
            g = torch.Generator().manual_seed(seed + 1)
            kwargs["a_scale"] = torch.rand(1, K, generator=g).to(kernel_device)  # one image
            kwargs["rows_per_image"] = M
        else:
            kwargs[item] = p[item]
    c = gemm(p["a"], p["w"], **kwargs)
    assert c.shape == (M, N) and c.dtype == kernel_dtype and c.is_contiguous()
    assert_close(c, gemm_reference(p["a"], p["w"], **kwargs), **tol(kernel_dtype), name=option)


@examples(25)
@given(M=M_SIZES, K=K_SIZES, N=N_SIZES, activation=ACTS, images=st.sampled_from([1, 2, 3]), seed=seeds)
def test_all_options_together_match_torch(kernel_dtype, kernel_device, M, K, N, activation, images, seed):
    # A-scale over B images, BN affine, activation and residual in one call. M is rounded down to
    # whole images (at least one row each).
    rows = max(1, M // images)
    M = rows * images
    p = problem(seed, M, K, N, kernel_device, kernel_dtype)
    gate = torch.rand(images, K, generator=torch.Generator().manual_seed(seed)).to(kernel_device)
    c = gemm(p["a"], p["w"], scale=p["scale"], shift=p["shift"], activation=activation,
             residual=p["residual"], a_scale=gate, rows_per_image=rows)

    # The same thing written out with plain torch ops, independently of gemm_reference.
    # The gate is rounded to A's dtype, and so is the gated A (the kernel multiplies in that dtype).
    x = (p["a"].float() * gate.to(kernel_dtype).float().repeat_interleave(rows, dim=0)).to(kernel_dtype).float()
    y = F.linear(x, p["w"].float()) * p["scale"] + p["shift"]
    y = {None: y, "gelu": F.gelu(y), "gelu_tanh": F.gelu(y, approximate="tanh"), "silu": F.silu(y)}[activation]
    y = y + p["residual"].float()
    assert_close(c, y, **tol(kernel_dtype), name=f"all options, act={activation}, B={images}")
    assert_close(c, gemm_reference(p["a"], p["w"], scale=p["scale"], shift=p["shift"], activation=activation,
                                   residual=p["residual"], a_scale=gate, rows_per_image=rows),
                 **tol(kernel_dtype), name="vs gemm_reference")


@examples(10)
@given(K=K_SIZES, N=N_SIZES, rows=st.sampled_from([1, 5, 21]), images=st.sampled_from([2, 3]), seed=seeds)
def test_a_scale_rows_read_their_own_image(kernel_dtype, kernel_device, K, N, rows, images, seed):
    # Image b's gate must reach exactly rows [b*rows, (b+1)*rows): tiles of 32 rows straddle
    # images here (rows = 5, 21), so a row->image mix-up shows.
    M = rows * images
    p = problem(seed, M, K, N, kernel_device, kernel_dtype)
    gate = torch.rand(images, K, generator=torch.Generator().manual_seed(seed)).to(kernel_device)
    c = gemm(p["a"], p["w"], a_scale=gate, rows_per_image=rows)
    for b in range(images):
        block = slice(b * rows, (b + 1) * rows)
        x = (p["a"][block].float() * gate[b].to(kernel_dtype).float()).to(kernel_dtype).float()
        assert_close(c[block], F.linear(x, p["w"].float()), **tol(kernel_dtype), name=f"image {b}")


# -- against the reference ops the kernel replaces (float32) --------------------------------------

F32 = TOLERANCES["float32"]


@examples(8)
@given(B=st.sampled_from([1, 2]), T=st.sampled_from([1, 7]), H=st.sampled_from([8, 33]),
       I=st.sampled_from([5, 40]), seed=seeds)
def test_bert_ffn_matches_the_reference_ops(kernel_device, B, T, H, I, seed):
    # BERT layer's FFN: up = gelu(x W1^T + b1); down = up W2^T + b2 + x (the residual before LayerNorm).
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, H)).astype(np.float32)
    w1 = (rng.standard_normal((I, H)) / np.sqrt(H)).astype(np.float32)
    b1 = (0.1 * rng.standard_normal(I)).astype(np.float32)
    w2 = (rng.standard_normal((H, I)) / np.sqrt(I)).astype(np.float32)
    b2 = (0.1 * rng.standard_normal(H)).astype(np.float32)
    up_np = reference.gelu(reference.linear(x, w1, b1))
    down_np = reference.linear(up_np, w2, b2) + x

    dev = lambda arr: torch.from_numpy(arr).to(kernel_device)  # noqa: E731
    x2 = dev(x).reshape(B * T, H)
    up = gemm(x2, dev(w1), bias=dev(b1), activation="gelu")
    down = gemm(up, dev(w2), bias=dev(b2), residual=x2)
    assert_close(up.reshape(B, T, I), up_np, **F32, name="FFN up")
    assert_close(down.reshape(B, T, H), down_np, **F32, name="FFN down")


def _bn(rng, C):
    """Random eval-mode batchnorm parameters (not init defaults: those hide bugs), eps as ALIGN's."""
    return (1 + 0.2 * rng.standard_normal(C)).astype(np.float32), (0.1 * rng.standard_normal(C)).astype(np.float32), \
        (0.1 * rng.standard_normal(C)).astype(np.float32), rng.uniform(0.5, 1.5, C).astype(np.float32), 1e-3


@examples(8)
@given(B=st.sampled_from([1, 2, 3]), H=st.sampled_from([1, 3]), W=st.sampled_from([2, 5]),
       C=st.sampled_from([3, 16]), expand=st.sampled_from([2, 6]), seed=seeds)
def test_mbconv_expansion_and_projection_match_the_reference_ops(kernel_device, B, H, W, C, expand, seed):
    # An MBConv block's two 1x1 convs, fused:
    #   expansion:  silu(bn(pointwise_conv(x)))                       -> gemm(scale, shift, silu)
    #   projection: bn(pointwise_conv(squeeze_excite(h))) + x         -> gemm(a_scale=gate, ...)
    # (the depthwise conv between them is left out: h is random here).
    rng = np.random.default_rng(seed)
    E, S = C * expand, max(1, C // 4)
    x = rng.standard_normal((B, H, W, C)).astype(np.float32)
    h = rng.standard_normal((B, H, W, E)).astype(np.float32)
    w_exp = (rng.standard_normal((E, C, 1, 1)) / np.sqrt(C)).astype(np.float32)
    w_proj = (rng.standard_normal((C, E, 1, 1)) / np.sqrt(E)).astype(np.float32)
    w_r = (rng.standard_normal((S, E, 1, 1)) / np.sqrt(E)).astype(np.float32)
    b_r = (0.1 * rng.standard_normal(S)).astype(np.float32)
    w_e = (rng.standard_normal((E, S, 1, 1)) / np.sqrt(S)).astype(np.float32)
    b_e = (0.1 * rng.standard_normal(E)).astype(np.float32)
    bn_exp, bn_proj = _bn(rng, E), _bn(rng, C)

    expanded_np = reference.silu(reference.batch_norm(reference.pointwise_conv(x, w_exp), *bn_exp))
    projected_np = reference.batch_norm(
        reference.pointwise_conv(reference.squeeze_excite(h, w_r, b_r, w_e, b_e), w_proj), *bn_proj) + x
    # The SE gate itself, from the same reference pieces squeeze_excite uses.
    pooled = h.mean(axis=(1, 2))
    gate = reference.sigmoid(reference.linear(reference.silu(reference.linear(pooled, w_r[:, :, 0, 0], b_r)),
                                               w_e[:, :, 0, 0], b_e))

    def folded(weight, bias, mean, var, eps):  # batchnorm as one multiply-add
        scale = weight / np.sqrt(var + np.float32(eps))
        return dev(scale), dev(bias - mean * scale)

    dev = lambda arr: torch.from_numpy(np.ascontiguousarray(arr)).to(kernel_device)  # noqa: E731
    x2 = dev(x).reshape(B * H * W, C)  # channels-last: one row per pixel
    s, t = folded(*bn_exp)
    expanded = gemm(x2, dev(w_exp), scale=s, shift=t, activation="silu")  # w as the [E, C, 1, 1] conv weight
    s, t = folded(*bn_proj)
    projected = gemm(dev(h).reshape(B * H * W, E), dev(w_proj), scale=s, shift=t, residual=x2,
                     a_scale=dev(gate), rows_per_image=H * W)
    assert_close(expanded.reshape(B, H, W, E), expanded_np, **F32, name="expansion conv")
    assert_close(projected.reshape(B, H, W, C), projected_np, **F32, name="SE + projection conv")


# -- layouts, edge sizes, extreme values ---------------------------------------------------------


def test_strided_views_are_read_in_place(kernel_dtype, kernel_device):
    # A as a transposed view (column-major), W as a transposed view, residual as a column slice of
    # a wider tensor, a_scale transposed, plus the [N, K, 1, 1] conv-weight form of W.
    M, K, N, images = 38, 33, 19, 2
    p = problem(0, M, K, N, kernel_device, kernel_dtype)
    a_t = p["a"].t().contiguous().t()  # same values, strides (1, M)
    w_t = p["w"].t().contiguous().t()  # strides (1, N)
    wide = torch.zeros(M, 2 * N, device=kernel_device, dtype=kernel_dtype)
    wide[:, ::2] = p["residual"]
    res_view = wide[:, ::2]  # strides (2N, 2)
    gate = torch.rand(K, images, generator=torch.Generator().manual_seed(1)).to(kernel_device).t()  # strides (1, 2)
    assert not any(t.is_contiguous() for t in (a_t, w_t, res_view, gate))
    kwargs = dict(bias=p["bias"], activation="gelu", a_scale=gate, rows_per_image=M // images)
    expected = gemm_reference(p["a"], p["w"], residual=p["residual"], **kwargs)
    assert_close(gemm(a_t, w_t, residual=res_view, **kwargs), expected, **tol(kernel_dtype), name="strided")
    w4 = p["w"][:, :, None, None]  # [N, K, 1, 1]
    assert_close(gemm(p["a"], w4, residual=p["residual"], **kwargs), expected, **tol(kernel_dtype), name="1x1 conv W")


# -- the LayerNorm epilogue ----------------------------------------------------------------------
#
# Each tile stores its rows' mean and sum of squared deviations; the last tile of a row block to
# finish combines them and normalises the block in place (kernels/gemm.py, _normalise_rows). The
# widths below put a row over 1, 2 and 3 interpreter tiles of 32 columns, with and without a
# column tail; M over one or several row blocks, odd. Tolerances: float32 as above (LayerNorm
# divides by a row's std, O(0.5..3) here, so the errors stay within 1e-5); bfloat16 as above: the
# rows are stored rounded before they are normalised, against statistics of the unrounded ones,
# an error of |v| / std * 2^-9, under the output's own rounding for these rows' |mean| / std.

LN_N_SIZES = st.sampled_from([1, 7, 32, 45, 80, 96])  # one column; odd; one tile; 2 tiles, a tail; 3, a tail; 3 even


def layer_norm_params(seed, N, device, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed + 7)
    return 1 + 0.3 * randn(g, N, device=device, dtype=dtype), randn(g, N, device=device, dtype=dtype, scale=0.5)


def test_layer_norm_hand_case(kernel_device):
    # a @ w^T = [[1, 3], [5, 5]]; + residual [[0, 1], [1, 1]] = [[1, 4], [6, 6]]. Row 0: mean 2.5,
    # variance 2.25 -> [-1, 1]; row 1 is constant: variance 0 -> exactly beta (eps = 0 would
    # divide by zero; 1e-12 keeps the row's zero deviations zero). Then * gamma [2, 1] + beta [0, 0.5].
    a = torch.tensor([[1.0, 0.0], [1.0, 2.0]], device=kernel_device)
    w = torch.tensor([[1.0, 2.0], [3.0, 1.0]], device=kernel_device)
    residual = torch.tensor([[0.0, 1.0], [1.0, 1.0]], device=kernel_device)
    gamma, beta = torch.tensor([2.0, 1.0], device=kernel_device), torch.tensor([0.0, 0.5], device=kernel_device)
    c = gemm(a, w, residual=residual, layer_norm=(gamma, beta, 1e-12))
    assert_close(c, [[-2.0, 1.5], [0.0, 0.5]], atol=1e-6, rtol=0)


@examples(30)
@given(M=st.sampled_from([1, 5, 33, 67]), K=K_SIZES, N=LN_N_SIZES, activation=ACTS,
       residual=st.booleans(), offset=st.sampled_from([0.0, 20.0]), seed=seeds)
def test_layer_norm_epilogue_matches_torch(kernel_dtype, kernel_device, M, K, N, activation, residual, offset, seed):
    """LayerNorm(act(A W^T + b) + residual) against torch's F.layer_norm of the float32 result;
    ``offset`` moves the rows' mean to 20 x their std, where E[v^2] - E[v]^2 would cancel."""
    p = problem(seed, M, K, N, kernel_device, kernel_dtype)
    gamma, beta = layer_norm_params(seed, N, kernel_device)
    kw = dict(bias=p["bias"], activation=activation, layer_norm=(gamma, beta, 1e-12),
              residual=(p["residual"].float() + offset).to(kernel_dtype) if residual else None)
    c = gemm(p["a"], p["w"], **kw)
    assert c.shape == (M, N) and c.dtype == kernel_dtype and c.is_contiguous()
    expected = gemm_reference(p["a"], p["w"], **kw)
    if kernel_dtype == torch.float32 or not offset:
        assert_close(c, expected, **tol(kernel_dtype), name=f"M={M} K={K} N={N}")
    else:  # bfloat16 rows of mean 20 x std: stored rounded to 20 x 2^-9 of a std (docstring above)
        assert_close(c, expected, atol=0.1, rtol=0, name=f"M={M} K={K} N={N} (offset rows)")
    from minialign.kernels import gemm as gemm_module
    assert not gemm_module._TILE_COUNTERS[c.device].any(), "a tile counter was left non-zero"


@examples(8)
@given(B=st.sampled_from([1, 2]), T=st.sampled_from([1, 7]), H=st.sampled_from([8, 33]),
       I=st.sampled_from([16, 40]), seed=seeds)
def test_bert_sublayer_ends_match_the_reference_ops(kernel_device, B, T, H, I, seed):
    """BertSelfOutput and BertOutput, LayerNorm(dense(x) + residual), in one launch each, against
    reference.linear_add_layer_norm in float32 (float32 tolerance: the same math)."""
    rng = np.random.default_rng(seed)
    x, residual = rng.standard_normal((B * T, I)).astype(np.float32), rng.standard_normal((B * T, H)).astype(np.float32)
    w, b = (rng.standard_normal((H, I)) / np.sqrt(I)).astype(np.float32), rng.standard_normal(H).astype(np.float32)
    gamma, beta = (1 + 0.3 * rng.standard_normal(H)).astype(np.float32), rng.standard_normal(H).astype(np.float32)
    expected = reference.linear_add_layer_norm(x, w, b, residual, gamma, beta, 1e-12)
    to = lambda v: torch.from_numpy(v).to(kernel_device)  # noqa: E731
    c = gemm(to(x), to(w), bias=to(b), residual=to(residual), layer_norm=(to(gamma), to(beta), 1e-12))
    assert_close(c, expected, **F32, name="LayerNorm(dense(x) + residual)")


def test_layer_norm_counters_left_zero_after_many_row_blocks(kernel_device):
    # More row blocks than a previous launch used, then fewer: the counters grow and stay zero,
    # and a second launch over the same rows (the counters reused) gives the same answer.
    from minialign.kernels import gemm as gemm_module

    for M in (300, 40, 300):
        p = problem(M, M, 24, 70, kernel_device, torch.float32)
        gamma, beta = layer_norm_params(M, 70, kernel_device)
        kw = dict(bias=p["bias"], residual=p["residual"], layer_norm=(gamma, beta, 1e-5))
        first, second = gemm(p["a"], p["w"], **kw), gemm(p["a"], p["w"], **kw)
        assert_close(first, gemm_reference(p["a"], p["w"], **kw), **F32, name=f"M={M}")
        assert torch.equal(first, second)
        assert not gemm_module._TILE_COUNTERS[first.device].any()


def test_tile_boundaries_and_wrapping(kernel_device):
    # Sizes just past a tile (33 = 32 + 1 under the interpreter, 129 / 257 on the GPU) and a tall
    # skinny / short wide pair: rows and columns past M, N are wrapped on load, never stored.
    for M, K, N in [(33, 17, 33), (129, 65, 3), (2, 130, 257)]:
        p = problem(M + N, M, K, N, kernel_device, torch.float32)
        c = gemm(p["a"], p["w"], bias=p["bias"], residual=p["residual"])
        assert_close(c, gemm_reference(p["a"], p["w"], bias=p["bias"], residual=p["residual"]),
                     **F32, name=f"M={M} K={K} N={N}")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_gpu_configuration_matches_torch(kernel_device, name):
    # Each entry of CONFIGS (the GPU's table) on a shape past one tile in every direction, with a
    # K tail, and with the epilogue it serves; the gated entries over 4 images whose boundaries
    # fall inside row tiles. Block sizes, wrapping and masks are what is checked (the interpreter
    # ignores warps and stages); float32, so 1e-5 as everywhere.
    cfg = CONFIGS[name]
    M, N, K = cfg["BLOCK_M"] + 12, cfg["BLOCK_N"] + 5, 2 * cfg["BLOCK_K"] + 7
    p = problem(len(name), M, K, N, kernel_device, torch.float32)
    kw = dict(scale=p["scale"], shift=p["shift"], residual=p["residual"],
              activation="gelu" if "gelu" in name else "silu")
    if "gate" in name:
        kw.update(a_scale=torch.rand(4, K, generator=torch.Generator().manual_seed(0)).to(kernel_device),
                  rows_per_image=M // 4)
    assert_close(gemm(p["a"], p["w"], config=cfg, **kw), gemm_reference(p["a"], p["w"], **kw), **F32, name=name)
    if name in ("16-bit wide", "float32"):  # the tiles the BERT output projection and FFN2 take
        kw = dict(bias=p["bias"], residual=p["residual"], layer_norm=(*layer_norm_params(0, N, kernel_device), 1e-12))
        assert_close(gemm(p["a"], p["w"], config=cfg, **kw), gemm_reference(p["a"], p["w"], **kw), **F32,
                     name=f"{name} + LayerNorm")


def test_the_docs_table_of_configurations_is_the_codes():
    """docs/kernels/gemm.md lists CONFIGS, entry by entry: the page may not drift from the code."""
    import pathlib
    import re

    page = (pathlib.Path(__file__).parent.parent / "docs" / "kernels" / "gemm.md").read_text()
    rows = re.findall(r"^  \| ([\w -]+?) \| (\d+) x (\d+) x (\d+) \| (\d+) \| (\d+) \|", page, re.M)
    documented = {name: tuple(map(int, numbers)) for name, *numbers in rows}
    assert documented == {name: (c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], c["num_warps"], c["num_stages"])
                          for name, c in CONFIGS.items()}


def test_config_override_gives_the_same_answer(kernel_device):
    # The benchmark's --sweep swaps tile shapes through `config`: any valid tile must agree.
    p = problem(3, 45, 40, 50, kernel_device, torch.float32)
    kw = dict(scale=p["scale"], shift=p["shift"], activation="silu", residual=p["residual"])
    expected = gemm_reference(p["a"], p["w"], **kw)
    for cfg in [dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=32, GROUP_M=1),
                dict(BLOCK_M=64, BLOCK_N=16, BLOCK_K=16, GROUP_M=3)]:
        assert_close(gemm(p["a"], p["w"], config=cfg, **kw), expected, **F32, name=str(cfg))


def test_extreme_values_do_not_overflow_to_nan(kernel_device):
    # W = identity makes C = A, so the activations see exactly these values; exp(-x) overflows to
    # inf for the negative ones, and x / (1 + inf) must give -0, not NaN.
    v = torch.tensor([-1e4, -100.0, -30.0, -5.0, -1e-3, 0.0, 1e-3, 5.0, 30.0, 100.0, 1e4], device=kernel_device)
    a = v[:, None].repeat(1, 16)
    w = torch.eye(16, device=kernel_device)
    for activation, ref in [("gelu", F.gelu), ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh")),
                            ("silu", F.silu)]:
        c = gemm(a, w, activation=activation)
        assert torch.isfinite(c).all(), activation
        assert_close(c, ref(a), **F32, name=activation)


def _through_the_epilogue(x, activation):
    """``activation(x)`` as the kernel's epilogue computes it: C = x @ I (exact in float32), then the
    activation on the accumulator. x is padded to a multiple of 16 columns' worth and cut back."""
    n = x.numel()
    a = torch.nn.functional.pad(x, (0, -n % 16)).reshape(-1, 16)
    return gemm(a, torch.eye(16, device=x.device), activation=activation).reshape(-1)[:n]


# Every x of [-20, 20] in steps of 1/1024 (exact in float32: 40,961 points, the tails where erf
# saturates included), and values far outside.
DENSE = torch.cat([torch.arange(-20 * 1024, 20 * 1024 + 1) / 1024.0,
                   torch.tensor([-1e4, -1e3, -100.0, -50.0, -30.0, 30.0, 50.0, 100.0, 1e3, 1e4])])


def test_gelu_approximation_over_a_dense_grid(kernel_device):
    """The epilogue's GELU (Abramowitz & Stegun 26.2.17 for Phi, ``_gelu``) against torch's exact
    erf GELU in float64. The formula's own error is below 7.5e-8 * |x|; float32 and the hardware
    approximations of exp2 and rsqrt add a few ulps. Measured under the interpreter: max abs error
    3.9e-7 (at x = 3.01; torch's own float32 GELU: 3.7e-7), below 6e-9 beyond |x| = 6, where Phi
    rounds to exactly 0 or 1. Bound: 1e-6 absolute (the project's float32 parity is 1e-4), plus
    1e-6 relative for the large |x| where GELU(x) is x itself."""
    x = DENSE.to(kernel_device)
    got = _through_the_epilogue(x, "gelu").double()
    exact = F.gelu(x.double())
    assert_close(got, exact, atol=1e-6, rtol=1e-6, name="gelu vs exact erf GELU")
    assert torch.equal(got[x.abs() >= 30], exact[x.abs() >= 30].float().double()), "GELU(x) = x (or -0) far out"


@pytest.mark.parametrize("activation, exact",
                         [("silu", F.silu), ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"))])
def test_sigmoid_activations_over_a_dense_grid(kernel_device, activation, exact):
    """SiLU and the tanh GELU take their sigmoid as rsqrt(1 + exp(-x))^2 (``_sigmoid``), relative
    error ~3e-7. Measured under the interpreter: max relative error 2.6e-7 (SiLU) and 2.7e-7
    (tanh GELU) where |f(x)| > 1, max abs error 2.9e-6 (SiLU at x = 13.9) and 1.0e-6 (tanh GELU
    at x = 4.4). Bound: 1e-6 absolute + 1e-6 relative."""
    x = DENSE.to(kernel_device)
    assert_close(_through_the_epilogue(x, activation).double(), exact(x.double()), atol=1e-6, rtol=1e-6,
                 name=f"{activation} vs torch")


def test_empty_and_k_zero(kernel_device):
    w = torch.randn(4, 3, device=kernel_device)
    assert gemm(torch.empty(0, 3, device=kernel_device), w).shape == (0, 4)
    # K = 0: the product is all zeros and only the epilogue remains.
    bias = torch.tensor([-1.0, 0.0, 0.5, 2.0], device=kernel_device)
    c = gemm(torch.empty(3, 0, device=kernel_device), torch.empty(4, 0, device=kernel_device), bias=bias,
             activation="silu")
    assert_close(c, F.silu(bias).expand(3, 4), **F32)


# -- bad inputs: a clear KernelInputError, never a wrong answer ----------------------------------


def _bad_cases(device):
    a = torch.randn(6, 4, device=device)
    w = torch.randn(5, 4, device=device)
    v = torch.randn(5, device=device)
    r = torch.randn(6, 5, device=device)
    gate = torch.rand(2, 4, device=device)
    other_dtype = torch.float16 if INTERPRETED else torch.bfloat16
    return [
        ("K mismatch", (a, torch.randn(5, 3, device=device)), {}, "K differs"),
        ("a not 2-D", (a[None], w), {}, "a must have 2 dimensions"),
        ("w 3-D", (a, w[:, :, None]), {}, r"w must be \[N, K\]"),
        ("w a 3x3 conv weight", (a, torch.randn(5, 4, 3, 3, device=device)), {}, r"w must be \[N, K\]"),
        ("dtype mismatch", (a, w.to(other_dtype)), {}, "w must have dtype"),
        ("integer a", (a.to(torch.int32), w), {}, "a must have dtype"),
        ("w on another device", (a, w.to("meta")), {}, "w is on meta"),
        ("residual wrong shape", (a, w), dict(residual=r.t()), r"residual must have shape \(6, 5\)"),
        ("residual wrong dtype", (a, w), dict(residual=r.double()), "residual must have dtype"),
        ("bias wrong length", (a, w), dict(bias=torch.randn(4, device=device)), r"bias must have shape \(5,\)"),
        ("bias with shift", (a, w), dict(bias=v, shift=v), "either bias, or scale"),
        ("bias with scale", (a, w), dict(bias=v, scale=v), "either bias, or scale"),
        ("scale float64", (a, w), dict(scale=v.double()), "scale must have dtype"),
        ("shift non-contiguous", (a, w), dict(shift=torch.randn(10, device=device)[::2]), "shift must be contiguous"),
        ("unknown activation", (a, w), dict(activation="relu"), "activation must be one of"),
        ("a_scale without rows_per_image", (a, w), dict(a_scale=gate), "a_scale and rows_per_image go together"),
        ("rows_per_image without a_scale", (a, w), dict(rows_per_image=3), "a_scale and rows_per_image go together"),
        ("rows_per_image not dividing M", (a, w), dict(a_scale=gate, rows_per_image=4), "does not divide M=6"),
        ("rows_per_image zero", (a, w), dict(a_scale=gate, rows_per_image=0), "positive int"),
        ("rows_per_image float", (a, w), dict(a_scale=gate, rows_per_image=3.0), "positive int"),
        ("a_scale wrong image count", (a, w), dict(a_scale=gate, rows_per_image=2),
         r"a_scale must have shape \(3, 4\)"),
        ("a_scale wrong K", (a, w), dict(a_scale=gate[:, :3], rows_per_image=3), r"a_scale must have shape \(2, 4\)"),
        ("not a tensor", (a.tolist(), w), {}, "a must be a torch.Tensor"),
        ("unknown config key", (a, w), dict(config={"BLOCK": 16}), "config keys"),
        ("layer_norm not a triple", (a, w), dict(layer_norm=(v, v)), r"layer_norm must be \(weight, bias, eps\)"),
        ("layer_norm weight wrong length", (a, w), dict(layer_norm=(v[:4], v, 1e-12)),
         r"layer_norm weight must have shape \(5,\)"),
        ("layer_norm bias of another dtype", (a, w), dict(layer_norm=(v, v.double(), 1e-12)),
         "layer_norm bias must have dtype"),
        ("layer_norm eps negative", (a, w), dict(layer_norm=(v, v, -1.0)), "layer_norm eps must be a real number"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases("cpu"))),
                         ids=[c[0] for c in _bad_cases("cpu")])
def test_bad_inputs_raise(kernel_device, case):
    _, args, kwargs, match = _bad_cases(kernel_device)[case]
    with pytest.raises(KernelInputError, match=match):
        gemm(*args, **kwargs)


@pytest.mark.skipif(not INTERPRETED, reason="bfloat16 runs on the GPU")
def test_interpreter_rejects_bfloat16():
    a = torch.randn(2, 2, dtype=torch.bfloat16)
    with pytest.raises(KernelInputError, match="interpreter runs float32 only"):
        gemm(a, a)
