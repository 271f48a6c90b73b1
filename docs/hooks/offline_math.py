"""MkDocs hook: copy MathJax into the built site, so that formulas render with no network.

The pages write math in LaTeX between ``$...$`` / ``$$...$$``; ``pymdownx.arithmatex`` (generic
mode) wraps each formula in ``<span class="arithmatex">\\(...\\)</span>`` (or a ``div`` with
``\\[...\\]``), and MathJax typesets those elements in the reader's browser. MathJax usually comes
from a CDN, which would make the site need a network connection to read. Instead, this hook takes
MathJax 3.2.2 from an installed Python package, ``django-static-mathjax`` (a dev dependency in
``pyproject.toml``: the MathJax release as it is published, Apache-2.0, with no Python
dependencies; the Django in its name is only where its authors use it), and adds to the site:

    assets/mathjax/tex-chtml-full.js                  TeX input + CommonHTML output, every TeX package
    assets/mathjax/output/chtml/fonts/woff-v2/*.woff  the fonts CommonHTML draws glyphs with
    assets/mathjax/LICENSE                            MathJax's licence travels with its code

Nothing is committed to the repository: the files are read from the package at every build.
``mkdocs.yml`` loads ``javascripts/mathjax-config.js`` (the settings) and then
``assets/mathjax/tex-chtml-full.js``; MathJax finds its fonts relative to its own script.
``tests/test_site.py`` opens every page in headless Chromium and checks that the math rendered.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

SITE_DIR = "assets/mathjax"
SCRIPT = "tex-chtml-full.js"
FONTS = "output/chtml/fonts/woff-v2"


def mathjax_root() -> Path:
    """The MathJax distribution inside the installed ``django-static-mathjax`` package."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or spec.submodule_search_locations is None:
        raise PluginError("MathJax is missing: the docs take it from the `django-static-mathjax` package, "
                          "a dev dependency (pip install -e \".[dev]\")")
    root = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax"
    if not (root / "es5" / SCRIPT).is_file():
        raise PluginError(f"{root / 'es5' / SCRIPT} not found: django-static-mathjax is not the 3.2 layout "
                          "this hook expects (pyproject.toml pins >=3.2.2,<3.3)")
    return root


def assets(root: Path) -> list[tuple[str, Path]]:
    """(path in the site, file on disk) for every file the site needs from MathJax."""
    es5 = root / "es5"
    pairs = [(f"{SITE_DIR}/{SCRIPT}", es5 / SCRIPT), (f"{SITE_DIR}/LICENSE", root / "LICENSE")]
    for font in sorted((es5 / FONTS).glob("*.woff")):
        pairs.append((f"{SITE_DIR}/{FONTS}/{font.name}", font))
    return pairs


def on_files(files, config):
    for site_path, source in assets(mathjax_root()):
        files.append(File.generated(config, site_path, abs_src_path=str(source)))
    return files
