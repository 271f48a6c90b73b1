"""The ``minialign`` command (and ``python -m minialign``): the CLI in a process of its own.

Being the first code of its process, it can tune OpenBLAS before NumPy loads it, which a library
import cannot (NumPy is usually loaded already, and a library should not change its host's
environment): after each matrix product OpenBLAS's idle threads spin for ~0.1 s by default and
keep busy the core that the fast backend's band threads need; at 2^16 cycles (~25 us) the
align-base vision tower takes 22% less time on 2 cores (0.32 s instead of 0.42 s,
benchmarks/results/vision_tower_cpu*.json). A value already in the environment wins.
"""

import os
import sys


def main() -> int:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")
    from .cli import main as cli_main  # imports NumPy, after the line above

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
