"""Counting what a forward launches: the project's Triton kernels and the torch ops between them.

On a GPU each counted thing is one kernel launch (a few microseconds of host time each, see
minialign/cuda_graphs.py); here it is counted wherever the forward runs -- the CPU interpreter
or meta tensors (kernels/plan.py) -- since the sequence of launches does not depend on where.

- Triton: every call of a project kernel's ``run`` (what ``kernel[grid](...)`` calls), by kernel.
- torch: every aten op that reaches the dispatcher (a ``TorchDispatchMode``), by op, except
  views (no kernel: a new shape or strides over the same memory) and allocations without a fill
  (``empty``: memory from torch's caching allocator, no kernel either). Ops that run inside a
  Triton launch are not counted: those are the interpreter's own copies, not the model's.
"""

from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass, field

# aten ops that allocate without launching anything (a fill is a kernel: zeros, ones, full count).
ALLOCATIONS = frozenset({"empty", "empty_strided", "new_empty", "new_empty_strided", "empty_like"})


@dataclass
class Launches:
    triton: collections.Counter = field(default_factory=collections.Counter)  # kernel name -> launches
    torch: collections.Counter = field(default_factory=collections.Counter)  # aten op name -> calls

    @property
    def total(self) -> int:
        return sum(self.triton.values()) + sum(self.torch.values())


@contextlib.contextmanager
def counting():
    """Within: the launches of the project's Triton kernels and of torch ops, into the ``Launches`` yielded."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from minialign.kernels import plan

    counts = Launches()
    inside_triton = [0]

    class CountOps(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if not inside_triton[0] and not func.is_view and name not in ALLOCATIONS:
                counts.torch[name] += 1
            return func(*args, **(kwargs or {}))

    originals = {}

    def wrap(fn):
        run = fn.run

        def counted_run(*args, **kwargs):
            counts.triton[fn.__name__] += 1
            inside_triton[0] += 1
            try:
                return run(*args, **kwargs)
            finally:
                inside_triton[0] -= 1

        originals[fn] = run
        fn.run = counted_run

    try:
        for fn in plan._kernels():
            wrap(fn)
        with CountOps():
            yield counts
    finally:
        for fn, run in originals.items():
            fn.run = run
