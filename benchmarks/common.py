"""Shared benchmark plumbing: timing, per-op accounting and the machine description."""

from __future__ import annotations

import collections
import json
import os
import platform
import statistics
import time


def timeit(fn, *, repeats: int = 5, warmup: int = 1) -> dict:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; seconds as median/min/max."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples), "repeats": repeats}


def interleaved_ratio(ours, reference, *, repeats: int = 5, pause_s: float = 0.5) -> dict:
    """``ours`` time / ``reference`` time, measured in alternation: reference then ours in every
    repeat, one ratio per repeat; median/min/max of the ratios.

    Robust to a machine whose speed drifts during the run (a shared VM does), which separate
    timing runs are not. The pause before each call lets the other library's idle threads stop
    spinning (OpenMP's and OpenBLAS's spin for up to ~0.1 s after their last parallel region and
    would steal a core).
    """
    ours(), reference()  # warm up
    ratios = []
    for _ in range(repeats):
        time.sleep(pause_s)
        t_ref = timeit(reference, repeats=1, warmup=0)["median_s"]
        time.sleep(pause_s)
        ratios.append(timeit(ours, repeats=1, warmup=0)["median_s"] / t_ref)
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "repeats": repeats}


def interleaved_times(fns: dict, *, repeats: int = 5, pause_s: float = 0.0) -> dict:
    """Time every callable in ``fns`` in alternation: each repeat calls all of them once, in
    order, after one untimed warm-up call each. Returns, per name, seconds as median/min/max, and
    under ``"ratios"`` the per-repeat ratio ``first / name`` for every other name (so > 1 means
    ``name`` is faster than the first), as median/min/max.

    Alternating makes a drift in the machine's speed hit every candidate alike, which separate
    timing runs do not; the per-repeat ratios cancel it. ``pause_s`` before each call lets idle
    BLAS/OpenMP threads stop spinning (see interleaved_ratio).
    """
    for fn in fns.values():
        fn()  # warm up
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(pause_s)
            samples[name].append(timeit(fn, repeats=1, warmup=0)["median_s"])
    result = {name: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s), "repeats": repeats}
              for name, s in samples.items()}
    first, *others = fns
    result["ratios"] = {}
    for name in others:
        ratios = [a / b for a, b in zip(samples[first], samples[name])]
        result["ratios"][f"{first}_over_{name}"] = {"median": statistics.median(ratios), "min": min(ratios),
                                                     "max": max(ratios), "repeats": repeats}
    return result


# After each matrix product OpenBLAS's idle threads spin for ~0.1 s by default, on the core that
# the NumPy backend's band threads need (see minialign/backends/numpy.py); OPENBLAS_THREAD_TIMEOUT=16
# (~25 us) stops that. OpenBLAS reads the variable once, when NumPy loads it, and minialign leaves
# the environment alone, so each CPU benchmark sets it itself before it imports numpy:
#     os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")
# and records what it ran with (openblas_thread_timeout).


def openblas_thread_timeout(given: str | None) -> dict:
    """The JSON record of OPENBLAS_THREAD_TIMEOUT; ``given`` is its value before the benchmark's
    setdefault (None: it was not set, and the benchmark set it)."""
    return {"value": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
            "set_by": "environment" if given is not None else "benchmark (os.environ.setdefault before numpy)"}


class TimedOps:
    """Wraps a backend so every op call is timed; ``totals`` maps op name -> seconds.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before and after each op, so that an
    asynchronous GPU op's time lands on that op and not on whichever op waits for it next.
    """

    def __init__(self, ops, sync=None):
        self._ops = ops
        self._sync = sync or (lambda: None)
        self.totals = collections.Counter()

    def __getattr__(self, name):
        target = getattr(self._ops, name)
        if not callable(target):
            return target

        def timed(*args, **kwargs):
            self._sync()
            start = time.perf_counter()
            result = target(*args, **kwargs)
            self._sync()
            self.totals[name] += time.perf_counter() - start
            return result

        return timed


def machine() -> dict:
    import numpy

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }
    try:
        import torch
        import transformers

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(), transformers=transformers.__version__)
    except ImportError:
        pass
    return info


def write_json(path: str | None, result: dict) -> None:
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text + "\n")


def gpu_time_ms(fn, *, warmup: int = 25, rep: int = 100) -> dict:
    """Time a CUDA callable with Triton's do_bench: median and 20th/80th percentiles, in ms."""
    from triton.testing import do_bench

    p50, p20, p80 = do_bench(fn, warmup=warmup, rep=rep, quantiles=[0.5, 0.2, 0.8])
    return {"median_ms": p50, "p20_ms": p20, "p80_ms": p80}


def gpu_device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"


def kernel_bench_parser(description: str):
    """The options every kernel benchmark shares; a benchmark adds its own to the result."""
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16"], choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    parser.add_argument("--dry-run", action="store_true", help="check bookkeeping and tiny shapes, time nothing")
    return parser


def should_time_on_gpu(name: str, dry_run: bool) -> bool:
    """True when a kernel benchmark should time on CUDA now.

    Without CUDA nothing is timed (no made-up numbers): a --dry-run then runs on Triton's CPU
    interpreter, switched on here before anything imports triton; otherwise it says so.
    """
    import torch

    if torch.cuda.is_available():
        return not dry_run
    os.environ.setdefault("TRITON_INTERPRET", "1")
    if not dry_run:
        print(f"{name} benchmark: no CUDA device, nothing timed or written "
              "(use --dry-run to check it on the CPU interpreter)")
    return False


def time_candidates(fns: dict, n_bytes: int, ours: str = "triton") -> dict:
    """Time each CUDA callable in ``fns`` (one warm-up call first, so compilation is not timed);
    report GB/s from ``n_bytes`` and, for every other candidate, how much faster ``ours`` is."""
    import torch

    result = {}
    with torch.no_grad():
        for name, fn in fns.items():
            fn()  # compile / JIT outside the timing
            torch.cuda.synchronize()
            t = gpu_time_ms(fn)
            result[name] = dict(t, GBps=n_bytes / (t["median_ms"] * 1e-3) / 1e9)
    for name in fns:
        if name != ours:
            result[f"speedup_vs_{name}"] = result[name]["median_ms"] / result[ours]["median_ms"]
    return result
