"""CUDA graphs: a tower's forward captured once per input shape, then replayed.

Why. On the Triton backend a vision forward is a few hundred kernel launches (four per MBConv
block, see ``tests/test_launches.py``), and each costs the host Python, Triton's JIT dispatch
and the driver's launch call (``benchmarks/host_overhead.py`` measures it). At batch 64 many of
those kernels run for about as long: the GPU waits on the host. A CUDA graph records the
launches of one forward once; replaying it is one driver call for all of them, so the host's
time per forward becomes a few copies and that call, whatever the number of kernels.

What is captured: a function of device tensors returning a tuple of device tensors -- the
towers' ``encode`` (``AlignVisionModel.encode``, ``AlignTextModel.encode``), from the input on the
device to the outputs, every launch and allocation in between. A tower built on such a backend
keeps a ``GraphedForward`` of its ``encode`` as ``tower.graphs`` (None otherwise) and calls it
instead of ``encode``; ``tower.graphs.clear()`` drops the graphs. A graph replays the same kernels
on the same memory, so ``GraphedForward`` copies each call's inputs into the tensors it captured
with, replays, and returns copies of the outputs (a caller who keeps one is not surprised when
the next replay overwrites the graph's own).

When: a graph holds for the shapes it was captured with. ``GraphedForward`` keys its graphs on
every input's shape, dtype and device. The first call with a new key runs eagerly -- it compiles
the Triton kernels' specialisations, which must not happen during a capture -- the second
captures and replays, later ones replay. Past ``max_graphs`` shapes, new shapes run eagerly.

Memory: the graphs of one ``GraphedForward`` share one memory pool (as torch's
``make_graphed_callables`` does). That is safe because they replay one at a time on one stream,
and what must outlive a replay -- each graph's input and output tensors -- stays allocated for
as long as its graph is cached: only the intermediates of different graphs share memory.

Off by default (``AlignModel.from_pretrained(..., backend="triton", cuda_graphs=True)`` turns it
on): it has not yet run on a GPU (``benchmarks/run_gpu.sh`` checks replay against eager and times
both), and each cached shape keeps its activations' memory. The caching and replay logic is
tested on the CPU with the capture step replaced by a stand-in (``tests/test_cuda_graphs.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


class CudaCapture:
    """``capture(fn, inputs) -> (graph, outputs)``: ``fn(*inputs)``'s GPU work recorded into a
    ``torch.cuda.CUDAGraph``; ``outputs`` are the tensors the graph writes. Every graph this
    object captures allocates from one memory pool."""

    def __init__(self):
        self.pool = None

    def __call__(self, fn: Callable, inputs: tuple) -> tuple[Any, tuple]:
        import torch

        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        # One run on a side stream first, as torch's documentation asks: libraries that set
        # themselves up lazily per stream (cuDNN for the stem) do it here, not in the capture.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = fn(*inputs)
        return graph, outputs


@dataclass
class _Captured:
    graph: Any  # has .replay()
    inputs: tuple  # the tensors the graph reads its inputs from
    outputs: tuple  # the tensors the graph writes its outputs to


class GraphedForward:
    """``fn(*tensors) -> tuple of tensors``, run eagerly the first time per input key, captured the
    second, replayed after (see the module docstring). ``capture`` is ``CudaCapture()`` unless a
    test hands in a stand-in with the same call."""

    def __init__(self, fn: Callable, *, capture: Callable | None = None, max_graphs: int = 8):
        self.fn = fn
        self.capture = CudaCapture() if capture is None else capture
        self.max_graphs = max_graphs
        self.captured: dict[tuple, _Captured] = {}  # input key -> its graph
        self.seen: set[tuple] = set()  # keys run eagerly once: captured at their next call

    @staticmethod
    def key(inputs: tuple) -> tuple:
        return tuple((tuple(x.shape), x.dtype, x.device) for x in inputs)

    def __call__(self, *inputs) -> tuple:
        key = self.key(inputs)
        captured = self.captured.get(key)
        if captured is None:
            if key not in self.seen or len(self.captured) >= self.max_graphs:
                self.seen.add(key)
                return tuple(self.fn(*inputs))
            static = tuple(x.clone() for x in inputs)
            graph, outputs = self.capture(self.fn, static)
            captured = self.captured[key] = _Captured(graph, static, tuple(outputs))
        for static, x in zip(captured.inputs, inputs):
            static.copy_(x)
        captured.graph.replay()
        return tuple(out.clone() for out in captured.outputs)

    def clear(self) -> None:
        """Drop every graph (and with the last reference, its memory)."""
        self.captured.clear()
        self.seen.clear()


def graphs_for(fn: Callable, ops) -> GraphedForward | None:
    """A ``GraphedForward`` of ``fn`` when the backend asks for CUDA graphs (``TritonOps`` with
    ``cuda_graphs=True``), else None: what a tower keeps as ``self.graphs``."""
    return GraphedForward(fn) if getattr(ops, "cuda_graphs", False) else None
