"""Test-wide settings: hypothesis profiles and a fixed seed.

The "ci" profile (the default) has no deadline — the first example of a test pays for imports,
transformers model construction and, later, Triton's interpreter — and a bounded number of
examples so the whole suite fits CI's budget on 2 cores. Set HYPOTHESIS_PROFILE=thorough
locally to search harder.
"""

import os

# Triton kernels run on the CPU through Triton's interpreter when there is no GPU (as in CI).
# This must be decided before anything imports triton.
try:
    import torch as _torch

    _HAS_CUDA = _torch.cuda.is_available()
except ImportError:
    _HAS_CUDA = False
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=15,
    derandomize=True,  # the same examples on every run: a CI failure reproduces locally
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("thorough", deadline=None, max_examples=300, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SEED = 20260127


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator with the suite's fixed seed, fresh for every test."""
    return np.random.default_rng(SEED)


@pytest.fixture(autouse=True)
def _seed_torch():
    """Seed torch (when installed) so that randomly initialised reference models are repeatable."""
    try:
        import torch
    except ImportError:
        yield
        return
    torch.manual_seed(SEED)
    yield


# Kernel tests run on the GPU in float32 and bfloat16 when there is one, and on the CPU under the
# interpreter in float32 only (it emulates the GPU with NumPy, which has no bfloat16).
KERNEL_DEVICE = "cuda" if _HAS_CUDA else "cpu"
KERNEL_DTYPES = ["float32", "bfloat16"] if _HAS_CUDA else ["float32"]


@pytest.fixture(params=KERNEL_DTYPES)
def kernel_dtype(request):
    """Each kernel test runs once per dtype this machine can run kernels in."""
    import torch

    return getattr(torch, request.param)


@pytest.fixture
def kernel_device():
    return KERNEL_DEVICE
