"""The built docs site, read as a reader's browser reads it, and the kernel figures up to date.

``test_every_page_in_chromium`` builds the site (``mkdocs build --strict``), serves it from a
thread on 127.0.0.1 and opens every page in headless Chromium (Debian's ``chromium`` package,
driven by playwright; ``.ci/run`` installs it). On each page it checks that

- the page answers HTTP 200 and runs without a JavaScript error;
- every ``<img>`` has loaded (``naturalWidth > 0``): the SVG figures and anything else;
- every formula was typeset by MathJax: each ``.arithmatex`` element holds an ``mjx-container``
  and no ``mjx-merror``, and no raw ``$``, ``$$``, ``\\(`` or ``\\[`` is left in the text outside
  code;
- at a 1280 px window (a laptop: navigation, column and table of contents all showing), no code
  block is wider than its column (``scrollWidth > clientWidth``: it would scroll sideways) and
  no formula spills out of the column, and no list was run into the paragraph above it by
  Markdown (a paragraph whose text has a line starting "4. " or "- ");
- every link inside the site leads to a page or file that answers 200, and every ``#anchor``
  exists on its target page;
- nothing is fetched from outside 127.0.0.1 (the site must read offline: requests elsewhere are
  blocked and reported) and no request fails (a missing MathJax font, say).

It is skipped only when Chromium is not installed. About 30 s on 2 cores (the build is ~7 s).
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless Chromium as root in a container, with nothing that phones home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Runs in the page after it has loaded and MathJax has finished: what the checks need, as JSON.
PAGE_PROBE = """async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
    await document.fonts.ready;  // MathJax's fonts load lazily, once glyphs need them
    const images = [...document.images].map(img => ({src: img.currentSrc || img.src,
                                                      ok: img.complete && img.naturalWidth > 0}));
    const math = [...document.querySelectorAll(".arithmatex")];
    const untypeset = math.filter(el => !el.querySelector("mjx-container")).map(el => el.textContent.slice(0, 80));
    const errors = [...document.querySelectorAll("mjx-merror")].map(el => el.getAttribute("data-mjx-error")
                                                                           || el.textContent.slice(0, 80));
    // The reader-visible text outside code, MathJax output and the search UI: raw TeX would show here.
    const body = document.querySelector("article") || document.body;
    const clone = body.cloneNode(true);
    clone.querySelectorAll("pre, code, mjx-container, script, style").forEach(el => el.remove());
    const ids = [...document.querySelectorAll("[id]")].map(el => el.id)
        .concat([...document.querySelectorAll("a[name]")].map(el => el.name));
    const links = [...document.querySelectorAll("a[href]")].map(a => a.href);
    // Layout at the test's window width: a code block or formula wider than its column scrolls
    // sideways (or spills over the table of contents), and a list that Markdown ran into the
    // paragraph above it shows as "4. **Project**" inside that paragraph.
    const column = body.getBoundingClientRect();
    const wide = [...body.querySelectorAll("pre > code")].filter(el => el.scrollWidth > el.clientWidth)
        .map(el => `code block ${el.scrollWidth} px in ${el.clientWidth} px: ${el.textContent.trim().slice(0, 60)}`)
        .concat([...body.querySelectorAll("mjx-container")].filter(el => {
            const box = el.getBoundingClientRect();
            const parent = el.closest("div.arithmatex") || el.parentElement;
            return box.right > column.right + 1 || box.left < column.left - 1
                || (parent && parent.scrollWidth > parent.clientWidth && parent.clientWidth > 0);
        }).map(el => `formula ${Math.round(el.getBoundingClientRect().width)} px in a ${Math.round(column.width)} px `
                     + `column: ${(el.closest(".arithmatex") || el).textContent.slice(0, 60)}`));
    const runIn = [...body.querySelectorAll("p")].map(p => {
        const bare = p.cloneNode(true);
        bare.querySelectorAll("code, mjx-container, script").forEach(el => el.remove());
        const m = bare.textContent.match(/\\n[ \\t]*(?:\\d+\\.|[-*+])[ \\t]+\\S.{0,50}/);
        return m ? m[0].trim() : null;
    }).filter(Boolean);
    return {images, math: math.length, untypeset, errors, text: clone.textContent, ids, links, wide, runIn};
}"""
# What a formula that MathJax missed would leave in the text: arithmatex's delimiters, "$$", a
# "$x$" pair on one line, or a "$" right before a TeX command (arithmatex skips "$\text{a} = $",
# which ends in a space). A lone "$", as in "$MINIALIGN_NUM_THREADS", is ordinary text.
RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\$[^\s$](?:[^$\n]*[^\s$])?\$|\$\\[A-Za-z]+")


WINDOW_WIDTH = 1280  # px


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # the base class's signature
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site, served over HTTP on 127.0.0.1: yields its base URL and directory."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium is not installed ({CHROMIUM} not found): `apt-get install chromium` "
                    "(.ci/run does) to check the site in a browser")
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs-material is a dev dependency")
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}\n{build.stderr}"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", out
    finally:
        server.shutdown()
        server.server_close()


def _page_urls(base: str, out: Path) -> list[str]:
    """Every page of the site: each index.html (use_directory_urls) but the 404 page."""
    pages = []
    for path in sorted(out.rglob("index.html")):
        rel = path.parent.relative_to(out).as_posix()
        pages.append(base if rel == "." else f"{base}{rel}/")
    return pages


def _raw_tex(text: str) -> list[str]:
    """The TeX delimiters (or "$x$" pairs) left in a page's prose."""
    return [m.group() for m in RAW_TEX.finditer(text)]


def check_site(base: str, out: Path) -> tuple[list[str], int]:
    """Open every page of the site built in ``out`` and served at ``base``.

    Returns the problems found (one line each) and the number of formulas on the site.
    """
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    ids: dict[str, set[str]] = {}  # page URL -> the ids on it
    anchors: list[tuple[str, str, str]] = []  # (from page, target page, fragment)
    targets: dict[str, str] = {}  # internal link target (no fragment) -> a page that links to it
    n_math = 0
    current = base  # the page being checked, named in every problem the browser's callbacks report

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        # 1280 px: a laptop window, where the navigation, the page's column and its table of
        # contents all show, and the column is at its narrowest before the layout changes.
        context = browser.new_context(viewport={"width": WINDOW_WIDTH, "height": 800})

        def only_local(route):
            url = route.request.url
            if url.startswith((base, "data:", "blob:", "about:")):
                route.continue_()
            else:
                problems.append(f"{current}: requested {url} (the site must read offline)")
                route.abort("blockedbyclient")

        context.route("**/*", only_local)
        page = context.new_page()
        page.on("pageerror", lambda err: problems.append(f"{current}: JavaScript error: {err}"))
        # Not reported here: ERR_ABORTED, a request cut short by the next navigation (the favicon,
        # typically), and ERR_BLOCKED_BY_CLIENT, a request only_local blocked (reported there).
        page.on("requestfailed", lambda req: not req.failure.startswith(("net::ERR_ABORTED",
                                                                         "net::ERR_BLOCKED_BY_CLIENT"))
                and problems.append(f"{current}: request failed: {req.url} ({req.failure})"))
        page.on("response", lambda resp: resp.status >= 400
                and problems.append(f"{current}: HTTP {resp.status} for {resp.url}"))

        pages = _page_urls(base, out)
        assert len(pages) > 10, pages
        for current in pages:
            response = page.goto(current, wait_until="load")
            if response is None or response.status != 200:
                problems.append(f"{current}: HTTP {response and response.status}")
                continue
            found = page.evaluate(PAGE_PROBE)
            ids[current] = set(found["ids"])
            n_math += found["math"]
            problems += [f"{current}: image did not load: {img['src']}" for img in found["images"] if not img["ok"]]
            problems += [f"{current}: formula not typeset: {t!r}" for t in found["untypeset"]]
            problems += [f"{current}: MathJax error: {e}" for e in found["errors"]]
            problems += [f"{current}: wider than its column at {WINDOW_WIDTH} px: {w}" for w in found["wide"]]
            problems += [f"{current}: a list run into a paragraph: {r!r}" for r in found["runIn"]]
            if _raw_tex(found["text"]):
                problems.append(f"{current}: raw TeX left in the text: {_raw_tex(found['text'])}")
            for href in found["links"]:
                if not href.startswith(base):
                    continue  # other sites (not fetched: offline) and mailto:
                target, fragment = urldefrag(href)
                target = target.removesuffix("index.html")  # the same page as its directory URL
                targets.setdefault(target, current)
                if fragment:
                    anchors.append((current, target, unquote(fragment)))

        # Links to pages the loop has not opened (or to files: figures, sources) must answer 200.
        for target, source in sorted(targets.items()):
            if target not in ids:
                status = context.request.get(target).status
                if status != 200:
                    problems.append(f"{source}: broken link to {target} (HTTP {status})")
        for source, target, fragment in anchors:
            if target in ids and fragment not in ids[target]:
                problems.append(f"{source}: link to {target}#{fragment}, but that page has no such anchor")
        browser.close()
    return problems, n_math


def test_every_page_in_chromium(site):
    problems, n_math = check_site(*site)
    assert n_math >= 20, f"only {n_math} formulas on the whole site: is pymdownx.arithmatex still on?"
    assert not problems, f"{len(problems)} problems on the built site:\n" + "\n".join(problems[:50])


def test_kernel_figures_are_up_to_date(tmp_path):
    """docs/figures/kernel_*.svg are what docs/figures/kernel_tiling.py writes now."""
    script = ROOT / "docs" / "figures" / "kernel_tiling.py"
    spec = importlib.util.spec_from_file_location("kernel_tiling", script)
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    assert figures.main(["--out-dir", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.glob("*.svg"))
    assert written == sorted(figures.FIGURES), written
    committed = sorted(p.name for p in (ROOT / "docs" / "figures").glob("kernel_*.svg"))
    assert committed == written, f"figures without a generator, or not generated: {set(committed) ^ set(written)}"
    for name in written:
        fresh = (tmp_path / name).read_text(encoding="utf-8")
        assert fresh == (ROOT / "docs" / "figures" / name).read_text(encoding="utf-8"), (
            f"docs/figures/{name} is stale: run `python docs/figures/kernel_tiling.py`")
    # Every kernel page shows its figure.
    for name in written:
        pages = [p for p in (ROOT / "docs" / "kernels").glob("*.md") if f"../figures/{name}" in p.read_text()]
        assert pages, f"no page in docs/kernels/ shows {name}"
