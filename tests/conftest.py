"""Test-wide settings: hypothesis profiles and a fixed seed.

The "ci" profile (the default) has no deadline — the first example of a test pays for imports,
transformers model construction and, later, Triton's interpreter — and a bounded number of
examples so the whole suite fits CI's budget on 2 cores. Set HYPOTHESIS_PROFILE=thorough
locally to search harder.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

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
