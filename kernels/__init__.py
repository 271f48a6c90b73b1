"""Hand-written Triton kernels for minialign's GPU backend, installed as ``minialign.kernels``.

One file per op (see the Triton-core issue). The folder sits at the top of the repository so
that a reader finds the kernels next to the NumPy reference, but it is packaged under
``minialign`` because a top-level ``kernels`` module would shadow the PyPI package of that name.
Nothing here is imported by the NumPy code path.
"""
