"""Training ALIGN from scratch in NumPy, in five files, each one idea:

- ``backward.py``: every layer as a forward/backward pair, the derivations in the docstrings;
- ``gradients.py``: the whole model's loss and gradient (``forward_backward``): the text tower's
  own forward, recorded op by op, and the vision tower's training-mode walk, replayed in reverse;
- ``optim.py``: AdamW, the learning-rate schedule and gradient clipping (nothing ALIGN-specific);
- ``loop.py``: the loop, its metrics log and checkpoints (resumable exactly);
- ``recipe.py``: the align-nano recipe behind ``minialign train``: data, vocabulary, initial
  weights, and the constants of the shipped run.
"""
