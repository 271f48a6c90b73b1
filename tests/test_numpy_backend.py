"""The speed machinery of the numpy backend (minialign/backends/numpy.py), on its own.

test_ops.py holds every op, on every backend, to torch and the numpy backend to the reference;
this file checks what makes the numpy backend fast without changing its answers: the thread pool
that runs bands of rows (``parallel_bands``, ``num_threads``), the fused epilogue (``bias_act``,
in place or not), the depthwise convolution's strided views and runs of pixels
(``_depthwise_windows``, ``_pixels_per_run``), im2col's windows and the blockwise erf. Band and
run sizes are shrunk with monkeypatch so that small inputs take every path that align-base's
large ones take. Where the split of the work must not change a single bit, the tests compare
with ``assert_array_equal``.
"""

import math
import os
import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given

from helpers import TOLERANCES, assert_close
from minialign.backends import numpy as numpy_ops
from minialign.backends import reference
from strategies import float_arrays

F32 = TOLERANCES["float32"]
t = torch.from_numpy


def nhwc(x):
    """torch NCHW tensor -> NumPy NHWC array."""
    return x.permute(0, 2, 3, 1).numpy()


def silu_as_the_epilogue_computes_it(z):
    """z / (1 + exp(-z)): SiLU with one rounding fewer than reference.silu's z * sigmoid(z), the
    spelling of the fused epilogue (``_silu_``), so that "the same bits" can be asserted."""
    with np.errstate(over="ignore"):
        return z / (1 + np.exp(-z))


# ----------------------------------------------------------------------------------------------
# parallel_bands and num_threads
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_rows, rows_per_band", [(1, 1), (1, 5), (13, 4), (13, 1000), (100, 3), (7, 1)])
@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_parallel_bands_covers_every_row_once(monkeypatch, num_rows, rows_per_band, threads):
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", threads)
    seen = np.zeros(num_rows, int)
    bands = []

    def visit(rows):
        assert 1 <= rows.stop - rows.start <= rows_per_band
        bands.append(rows)  # list.append is atomic under the GIL
        seen[rows] += 1  # bands are disjoint, so concurrent writes never touch the same row

    numpy_ops.parallel_bands(visit, num_rows, rows_per_band)
    np.testing.assert_array_equal(seen, 1)
    assert len(bands) == -(-num_rows // rows_per_band)


def test_parallel_bands_raises_a_bands_exception(monkeypatch):
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", "2")

    def fail_on_row_3(rows):
        if rows.start <= 3 < rows.stop:
            raise ValueError("band with row 3")

    with pytest.raises(ValueError, match="band with row 3"):
        numpy_ops.parallel_bands(fail_on_row_3, 8, 1)


def test_parallel_bands_nested_calls_finish(monkeypatch):
    """A band that itself calls parallel_bands (an op using another) must not wait for a helper
    that can never start: the pool's threads are all busy in the outer call."""
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", "2")
    seen = np.zeros((4, 6), int)

    def outer(rows):
        for r in range(rows.start, rows.stop):
            def inner(cols, r=r):
                seen[r, cols] += 1
            numpy_ops.parallel_bands(inner, 6, 1)

    runner = threading.Thread(target=numpy_ops.parallel_bands, args=(outer, 4, 1), daemon=True)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive(), "nested parallel_bands hung"
    np.testing.assert_array_equal(seen, 1)


def test_num_threads_reads_the_environment(monkeypatch):
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", "3")
    assert numpy_ops.num_threads() == 3
    monkeypatch.delenv("MINIALIGN_NUM_THREADS")
    assert numpy_ops.num_threads() == (os.cpu_count() or 1)


# ----------------------------------------------------------------------------------------------
# bias_act: the fused epilogue, in bands, in place or not
# ----------------------------------------------------------------------------------------------


def test_bias_act_hand_case():
    # silu(0) = 0, silu(2) = 2 / (1 + e^-2), then + residual.
    x = np.array([-1.0, 1.0], np.float32).reshape(2, 1)
    out = numpy_ops.bias_act(x, np.float32([1.0]), "silu", residual=np.float32([[10.0], [20.0]]))
    assert_close(out, [[10.0], [20 + 2 / (1 + math.exp(-2))]], atol=1e-6, rtol=1e-6)
    assert x[1, 0] == 1.0  # not in place unless asked


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_bias_act_bands_and_threads_equal_the_composition(monkeypatch, threads):
    """Many bands (7 rows each over 3 * 11 * 13 = 429 rows: a short last band) on 1, 2 and 3
    threads give exactly silu(x + bias) + residual: the same float32 operations, in the same
    order; in place too (out=x overwrites x)."""
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", threads)
    monkeypatch.setattr(numpy_ops, "_EPILOGUE_BAND", 7 * 17)
    rng = np.random.default_rng(int(threads))
    x = (rng.standard_normal((3, 11, 13, 17)) * 3).astype(np.float32)
    bias = rng.standard_normal(17).astype(np.float32)
    residual = rng.standard_normal(x.shape).astype(np.float32)
    expected = silu_as_the_epilogue_computes_it(x + bias) + residual
    np.testing.assert_array_equal(numpy_ops.bias_act(x, bias, "silu", residual), expected)
    assert_close(expected, reference.silu(x + bias) + residual, **F32, name="vs the reference's silu")
    np.testing.assert_array_equal(numpy_ops.bias_act(x, bias, "silu", residual, out=x), expected)
    np.testing.assert_array_equal(x, expected)


def test_bias_act_silu_saturates_without_warnings(monkeypatch):
    # exp(-z) overflows to inf for z < -88, in the pool's threads too (NumPy's error state is per
    # thread, so the op must silence it inside each band).
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", "2")
    monkeypatch.setattr(numpy_ops, "_EPILOGUE_BAND", 2)
    x = np.array([-1000.0, -90.0, 90.0, 1000.0], np.float32).reshape(4, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = numpy_ops.bias_act(x, None, "silu")
    assert_close(out, [[0.0], [0.0], [90.0], [1000.0]], atol=1e-35, rtol=0)


def test_fused_epilogues_equal_the_composition_exactly():
    """An op's bias= and activation= options are act(op(...) + bias), to the bit: the convolution
    is computed first, then the same epilogue runs on it in place."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 6, 5)).astype(np.float32)
    weight = rng.standard_normal((5, 1, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    plain = numpy_ops.depthwise_conv2d(x, weight, 2, (0, 1, 0, 1))
    np.testing.assert_array_equal(numpy_ops.depthwise_conv2d(x, weight, 2, (0, 1, 0, 1), bias=bias), plain + bias)
    np.testing.assert_array_equal(numpy_ops.depthwise_conv2d(x, weight, 2, (0, 1, 0, 1), bias=bias, activation="silu"),
                                  silu_as_the_epilogue_computes_it(plain + bias))
    w1 = rng.standard_normal((4, 5, 1, 1)).astype(np.float32)
    b1 = rng.standard_normal(4).astype(np.float32)
    residual = rng.standard_normal((2, 7, 6, 4)).astype(np.float32)
    plain = numpy_ops.pointwise_conv(x, w1)
    np.testing.assert_array_equal(numpy_ops.pointwise_conv(x, w1, b1, activation="silu", residual=residual),
                                  silu_as_the_epilogue_computes_it(plain + b1) + residual)


# ----------------------------------------------------------------------------------------------
# the depthwise convolution: bands of rows, runs of pixels, strided views
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k, stride, padding", [(3, 1, (1, 1, 1, 1)), (5, 2, (1, 2, 1, 2))])
@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_depthwise_conv_bands_and_threads_match_torch(monkeypatch, threads, k, stride, padding):
    """Bands of two output rows (an odd Ho leaves a short last band) on 1, 2 and 3 threads, both
    strides: every output row is computed exactly once, whatever the split, and the means do not
    depend on it."""
    b, c, h, w = 2, 5, 13, 11
    top, bottom, left, right = padding
    wo = (w + left + right - k) // stride + 1
    rng = np.random.default_rng(int(threads))
    x = torch.from_numpy(rng.standard_normal((b, c, h, w)).astype(np.float32))
    weight = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", "1")
    _, whole_means = numpy_ops.depthwise_conv2d(nhwc(x), weight, stride, padding, activation="silu", return_means=True)
    monkeypatch.setenv("MINIALIGN_NUM_THREADS", threads)
    monkeypatch.setattr(numpy_ops, "_DEPTHWISE_BAND", 2 * b * wo * c)  # a row of the output is B * Wo * C
    expected = F.conv2d(F.pad(x, (left, right, top, bottom)), t(weight), stride=stride, groups=c)
    ours = numpy_ops.depthwise_conv2d(nhwc(x), weight, stride, padding)
    assert_close(ours, nhwc(expected), **F32, name="depthwise")
    fused, means = numpy_ops.depthwise_conv2d(nhwc(x), weight, stride, padding, activation="silu", return_means=True)
    assert_close(fused, nhwc(F.silu(expected)), **F32, name="depthwise + SiLU")
    np.testing.assert_array_equal(means, whole_means)


@pytest.mark.parametrize("run_elements", [1, 12, 30, 4096])
def test_depthwise_conv_pixel_runs_match_torch(monkeypatch, run_elements):
    """At stride 1 einsum's inner loop covers a run of T pixels x C channels (T divides the output
    width, T * C <= _RUN_ELEMENTS): with 6 channels and 12 output columns these limits give runs
    of 1, 2, 4 (the largest divisor of 12 with T * 6 <= 30) and 12 pixels."""
    b, c, h, w, k = 2, 6, 7, 12, 3
    monkeypatch.setattr(numpy_ops, "_RUN_ELEMENTS", run_elements)
    rng = np.random.default_rng(run_elements)
    x = torch.from_numpy(rng.standard_normal((b, c, h, w)).astype(np.float32))
    weight = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    expected = F.silu(F.conv2d(x, t(weight), t(bias), padding=1, groups=c))
    ours, means = numpy_ops.depthwise_conv2d(nhwc(x), weight, 1, (1, 1, 1, 1), bias=bias, activation="silu",
                                             return_means=True)
    assert_close(ours, nhwc(expected), **F32, name="depthwise + bias + SiLU")
    assert_close(means, expected.mean(dim=(2, 3)).numpy(), **F32, name="SE means")
    assert numpy_ops._pixels_per_run(w, c) == {1: 1, 12: 2, 30: 4, 4096: 12}[run_elements]


@pytest.mark.parametrize("stride, run", [(1, 1), (1, 3), (2, 1)])
def test_depthwise_windows_are_the_taps(stride, run):
    """view[b, y, r, i, j, t*C + c] = x[b, y*s + i, (r*run + t)*s + j, c]: the strided view holds
    the same numbers as the reference's taps, without a copy."""
    x = np.random.default_rng(stride + run).standard_normal((2, 8, 7, 3)).astype(np.float32)  # already padded
    k, C = 3, 3
    Ho, Wo = reference.conv_output_size(8, k, stride), reference.conv_output_size(7, k, stride)
    Wo -= Wo % run  # whole runs only (the op picks a run that divides Wo)
    view = numpy_ops._depthwise_windows(x, k, stride, run)
    assert np.shares_memory(view, x)
    for i in range(k):
        for j in range(k):
            taps = reference.tap(x, i, j, stride, Ho, Wo)  # [B, Ho, Wo, C]
            np.testing.assert_array_equal(view[:, :, :, i, j].reshape(2, Ho, Wo // run, run, C),
                                          taps.reshape(2, Ho, Wo // run, run, C))


def test_depthwise_windows_refuse_a_run_at_stride_2():
    """A run of pixels is one memory-contiguous axis only at stride 1."""
    with pytest.raises(ValueError, match="a run of 4 pixels needs stride 1, got stride 2"):
        numpy_ops._depthwise_windows(np.zeros((1, 9, 9, 3), np.float32), 3, 2, 4)


# ----------------------------------------------------------------------------------------------
# im2col, padding and the blockwise erf
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2])
def test_windows_are_the_taps_of_im2col(stride):
    """windows[b, y, x, c, i, j] = x_padded[b, y*stride + i, x*stride + j, c] (what conv2d copies
    into its patch matrix), a view of the input."""
    x = np.random.default_rng(stride).standard_normal((2, 7, 6, 3)).astype(np.float32)
    windows = numpy_ops._windows(x, 3, stride)
    Ho, Wo = reference.conv_output_size(7, 3, stride), reference.conv_output_size(6, 3, stride)
    assert windows.shape == (2, Ho, Wo, 3, 3, 3) and np.shares_memory(windows, x)
    for i in range(3):
        for j in range(3):
            np.testing.assert_array_equal(windows[..., i, j], reference.tap(x, i, j, stride, Ho, Wo))


def test_pad_hw_skips_the_copy_without_padding():
    x = np.ones((1, 2, 3, 4), np.float32)
    assert numpy_ops.pad_hw(x, (0, 0, 0, 0)) is x
    padded = numpy_ops.pad_hw(x, (1, 0, 2, 1))
    np.testing.assert_array_equal(padded, np.pad(x, ((0, 0), (1, 0), (2, 1), (0, 0))))


@pytest.mark.parametrize("threads", ["1", "3"])
@given(x=float_arrays((5, 37), scale=4.0))
def test_blockwise_erf_and_gelu_do_not_depend_on_the_blocks(threads, x):
    """Blocks of 16 elements (a short last one: 185 = 11 * 16 + 9) on 1 or 3 threads give the
    same bits as one block: each element goes through the same operations."""
    with pytest.MonkeyPatch.context() as mp:  # hypothesis runs many examples per test call
        mp.setenv("MINIALIGN_NUM_THREADS", "1")
        whole_erf, whole_gelu = numpy_ops.erf(x), numpy_ops.gelu(x)
        mp.setenv("MINIALIGN_NUM_THREADS", threads)
        mp.setattr(numpy_ops, "_ERF_CHUNK", 16)
        np.testing.assert_array_equal(numpy_ops.erf(x), whole_erf)
        np.testing.assert_array_equal(numpy_ops.gelu(x), whole_gelu)


def test_linear_is_one_matrix_product_over_the_leading_axes():
    """[B, T, in] is flattened to [B*T, in] for one BLAS call; the result is reshaped back and, for
    a row, is that row's product."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 5, 4)).astype(np.float32), rng.standard_normal((6, 4)).astype(np.float32)
    out = numpy_ops.linear(x, w)
    assert out.shape == (3, 5, 6)
    np.testing.assert_array_equal(out.reshape(15, 6), x.reshape(15, 4) @ w.T)
