"""Progress on stderr for long work (embedding a folder, classifying many images, training).

tqdm's bar, as users of pip and tqdm expect: on stderr, so that stdout stays the result, and only
where a person watches: hidden when stderr is not a terminal (tqdm's ``disable=None``) and when
the caller asks for machine-readable output (``--json``: ``enabled=False``).
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress(total: int, desc: str, *, unit: str = "img", enabled: bool = True) -> tqdm:
    """A bar counting ``total`` units; ``update(n)``, ``set_postfix(...)``, ``close()``."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if enabled else True,
                dynamic_ncols=True)
