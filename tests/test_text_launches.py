"""How many kernels one BERT layer launches on the Triton backend, counted, padded and packed.

Two counters run together: every Triton kernel launch (each kernel of ``minialign.kernels``
wrapped), and every torch op that runs a kernel of its own -- a ``TorchDispatchMode`` that sees
each aten op and keeps those that are neither views (a permute, a slice, a reshape of a
contiguous tensor: no kernel) nor bare allocations (``torch.empty``: no kernel either). A copy,
a ``+``, an index or a fill would show.

A layer is 5 launches and no torch op: the Q, K, V projection (one GEMM, the three weights
concatenated when the model was built; before that, three GEMMs and 9 launches a layer),
attention (reading q, k and v in place from that GEMM's output), the output projection with the
residual and LayerNorm in its epilogue, FFN1 + GELU, FFN2 with the residual and LayerNorm. Each
LayerNorm needs the mean and variance of a whole 768-wide row, which no GEMM tile holds (128 x 256
at most): each tile stores its rows' partial statistics, and the last tile of a row block to
finish combines them and normalises the block (``kernels/gemm.py``). Before that the two
LayerNorms were launches of their own, 7 a layer.

The first such GEMM on a device makes the tile counters it counts in (one zero fill, kept for
every later launch): the model fixture runs a forward first, so the counts below are a warm
forward's.

Under TRITON_INTERPRET=1 (set by conftest.py) this runs on the CPU; what is counted is which
launches the code makes, the same on a GPU.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

pytest.importorskip("triton", reason="the triton backend needs the triton package (the dev extra installs it)")

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from minialign import AlignTextConfig  # noqa: E402
from minialign.backends import get_ops  # noqa: E402
from minialign.kernels import attention, batchnorm_silu, depthwise_conv, gemm, layer_norm, se_gate  # noqa: E402
from minialign.text_model import AlignTextModel  # noqa: E402

LAUNCHES_PER_LAYER = 5  # see the module docstring
# Ops that only allocate memory: no kernel runs.
ALLOCATIONS = {"aten.empty", "aten.empty_like", "aten.empty_strided"}
CONFIG = AlignTextConfig(vocab_size=50, hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                         intermediate_size=48, max_position_embeddings=16)


class Launches(TorchDispatchMode):
    """Within: ``triton`` lists the Triton kernels launched, ``torch`` the aten ops that run a kernel."""

    def __init__(self):
        super().__init__()
        self.triton: list[str] = []
        self.torch: list[str] = []
        self._inside_triton = False  # the interpreter's own tensor traffic is not the model's

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self._inside_triton and not func.is_view and str(func.overloadpacket) not in ALLOCATIONS:
            self.torch.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def counting_triton(self, monkeypatch):
        """Wrap every kernel of minialign.kernels so that a launch is recorded by name."""
        counter = self

        class Counted:
            def __init__(self, name, kernel):
                self.name, self.kernel = name, kernel

            def __getitem__(self, grid):
                launch = self.kernel[grid]

                def run(*args, **kwargs):
                    counter.triton.append(self.name)
                    counter._inside_triton = True
                    try:
                        return launch(*args, **kwargs)
                    finally:
                        counter._inside_triton = False

                return run

        for module in (attention, batchnorm_silu, depthwise_conv, gemm, layer_norm, se_gate):
            for name, value in list(vars(module).items()):
                if name.startswith("_") and name.endswith("_kernel"):
                    monkeypatch.setattr(module, name, Counted(name, value))
        with self:
            yield self


def _params(rng) -> dict[str, np.ndarray]:
    """Random weights of CONFIG's shapes (LayerNorm gains near 1): what is counted does not depend
    on their values, but the run is a real one."""
    shapes = AlignTextModel.expected_shapes(CONFIG)
    return {name: (1 + 0.1 * rng.standard_normal(shape) if name.endswith("LayerNorm.weight")
                   else 0.2 * rng.standard_normal(shape)).astype(np.float32) for name, shape in shapes.items()}


@pytest.fixture(scope="module")
def model():
    model = AlignTextModel(CONFIG, _params(np.random.default_rng(0)), ops=get_ops("triton"))
    model(*_batch(np.random.default_rng(0)))  # warm: the GEMM + LayerNorm's tile counters exist (docstring)
    return model


def _batch(rng, B=3, T=9):
    lengths = np.array([T, 4, 1])[:B]
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    return rng.integers(0, CONFIG.vocab_size, (B, T)), mask, np.zeros((B, T), np.int64)


def test_a_padded_layer_is_five_launches_and_no_torch_op(model, monkeypatch):
    ids, mask, types = (model.ops.from_numpy(a) for a in _batch(np.random.default_rng(1)))
    x = model.embeddings(ids, types)
    with Launches().counting_triton(monkeypatch) as counted:
        model.encoder_layer(0, x, mask)
    assert counted.torch == []
    assert counted.triton == ["_gemm_epilogue_kernel", "_attention_kernel", "_gemm_epilogue_kernel",
                              "_gemm_epilogue_kernel", "_gemm_epilogue_kernel"]
    assert len(counted.triton) == LAUNCHES_PER_LAYER


def test_a_packed_layer_is_five_launches_and_no_torch_op(model, monkeypatch):
    batch = model.pack(*_batch(np.random.default_rng(2)))
    x = model.embeddings(batch.input_ids, batch.token_type_ids, batch.position_ids)  # [N, H]
    assert x.shape == (9 + 4 + 1, CONFIG.hidden_size)
    with Launches().counting_triton(monkeypatch) as counted:
        model.encoder_layer(0, x, batch)
    assert counted.torch == []
    assert len(counted.triton) == LAUNCHES_PER_LAYER
    assert counted.triton.count("_attention_kernel") == 1


@pytest.mark.parametrize("packed", [False, True])
def test_the_whole_text_forward(model, monkeypatch, packed):
    """Beyond the layers, once per forward: the embeddings (three row gathers and an add in torch,
    then LayerNorm(+ positions, read in place: no broadcast copy)), the pooler (its GEMM, then tanh
    in torch), and, packed, the [CLS] rows' gather and the scatter back into the padded batch (a
    zero fill and an index copy). The inputs' conversion to tensors is outside the count."""
    ids, mask, types = _batch(np.random.default_rng(3))
    checked = model.check_inputs(ids, mask, types)
    with Launches().counting_triton(monkeypatch) as counted:
        if packed:
            batch = model.pack(*checked)
            conversions = len(counted.torch)  # the packed inputs' conversion (host arrays -> tensors)
            x, _, _ = model.encoder(model.embeddings(batch.input_ids, batch.token_type_ids, batch.position_ids), batch)
            model.unpack(x, batch), model.pooler_head(model.ops.embedding(batch.first_token, x))
        else:
            ids, mask, types = (model.ops.from_numpy(a) for a in checked)
            conversions = len(counted.torch)
            x, _, _ = model.encoder(model.embeddings(ids, types), mask)
            model.pooler(x)
    layers = CONFIG.num_hidden_layers
    assert len(counted.triton) == LAUNCHES_PER_LAYER * layers + 2  # + the embeddings' LayerNorm and the pooler's GEMM
    expected_torch = ["aten.index", "aten.index", "aten.add", "aten.index", "aten.tanh"]
    if packed:
        expected_torch = expected_torch[:4] + ["aten.new_zeros", "aten.index_copy_", "aten.index", "aten.tanh"]
    assert counted.torch[conversions:] == expected_torch


def test_the_tile_counters_are_made_once(model, monkeypatch):
    """The GEMM + LayerNorm's tile counters: made (one zero fill) by the first such launch on a
    device, then kept, and left at zero by every launch that used them."""
    batch = model.pack(*_batch(np.random.default_rng(4)))
    x = model.embeddings(batch.input_ids, batch.token_type_ids, batch.position_ids)
    monkeypatch.setattr(gemm, "_TILE_COUNTERS", {})
    with Launches().counting_triton(monkeypatch) as first:
        model.encoder_layer(0, x, batch)
    with Launches().counting_triton(monkeypatch) as second:
        model.encoder_layer(0, x, batch)
    assert first.torch == ["aten.zeros"] and second.torch == []
    (counters,) = gemm._TILE_COUNTERS.values()
    assert not counters.any()
