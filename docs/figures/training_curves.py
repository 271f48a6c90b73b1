"""Write docs/figures/training_curves.svg: loss, temperature and held-out accuracy of a training run.

Run from the repository root:  python docs/figures/training_curves.py
(tests/test_docs.py re-runs it into a temporary folder and checks the committed SVG is its output.)

Everything comes from one ``train_log.jsonl`` as ``minialign.training.loop.train_loop`` writes it
(one JSON object per step with ``loop.LOG_KEYS``, plus "eval": {"zero_shot_top1", "chance"} on the
evaluated steps); by default the committed log of the embedded model,
``minialign/models/align-nano/train_log.jsonl``. Three panels share the step axis:

- the training loss (label-smoothed contrastive cross-entropy, in nats) of every step, light, and
  its trailing mean over ``WINDOW`` steps, dark;
- the learned temperature (the logits are cosine similarity / temperature);
- zero-shot top-1 at the evaluated steps, joined by lines, and the chance level (1 / number of
  classes) dashed.

Axis ranges and ticks are computed from the log, so any log works: any number of steps, evals at
any steps or none. A step logged twice (a run resumed from an earlier checkpoint appends to the
log) keeps its last record. The SVG is written as text by this script (no plotting library), with
coordinates rounded to 0.1 px, so the file depends only on the log.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOG_PATH = ROOT / "minialign" / "models" / "align-nano" / "train_log.jsonl"
OUT_NAME = "training_curves.svg"

WINDOW = 50  # steps in the loss's trailing mean (fewer at the start of the log)

PLOT_W, PLOT_H = 220, 180  # px, the plotting area of one panel
LEFT, RIGHT = 50, 20  # px around each plotting area: room for the y tick labels / a gap
HEADER = 30  # px for the figure's title
TOP = 40  # px above a plotting area (inside its panel) for the panel's title
BOTTOM = 46  # px below a plotting area for the x tick labels and the axis name
PANEL_W = LEFT + PLOT_W + RIGHT

FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'
INK = "#222222"
GRID = "#e6e6e6"
LOSS_RAW = "#a6c8e6"  # light blue: every step
LOSS_MEAN = "#08519c"  # dark blue: the trailing mean
TEMPERATURE = "#d95f02"
ACCURACY = "#1b7837"
CHANCE = "#777777"
HALO = ' stroke="#ffffff" stroke-width="3" paint-order="stroke"'  # keeps a label readable over a line


def read_log(path: Path) -> list[dict]:
    """The log's records sorted by step, one per step (the last one written wins)."""
    by_step: dict[int, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[int(record["step"])] = record
    if not by_step:
        raise ValueError(f"{path}: no records")
    return [by_step[step] for step in sorted(by_step)]


def trailing_mean(values: list[float], window: int = WINDOW) -> list[float]:  # [N] -> [N]
    """out[i] = mean(values[max(0, i - window + 1) : i + 1]), a running sum so it is O(N)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def nice_step(span: float, target: int = 5) -> float:
    """The smallest of 1, 2, 5 x 10^k that cuts ``span`` into at most ``target`` intervals."""
    if span <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(span / target))
    for m in (1, 2, 5, 10):
        if span / (m * magnitude) <= target + 1e-9:
            return m * magnitude
    return 10 * magnitude


def _decimals(step: float) -> int:
    """Digits after the point that tell ticks ``step`` apart (0 for 1, 2, 5, 10, ...; 2 for 0.05)."""
    return max(0, -math.floor(math.log10(step) + 1e-9))


class Axis:
    """A linear map from data [lo, hi] to pixels [p0, p1], with tick values k * step inside."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, step: float):
        self.lo, self.hi, self.p0, self.p1, self.step = lo, hi, p0, p1, step

    @classmethod
    def padded(cls, lo: float, hi: float, p0: float, p1: float, target: int = 5) -> Axis:
        """For values: [lo, hi] widened outwards to whole ticks (a flat series gets one tick each side)."""
        if hi - lo <= 1e-12 * max(1.0, abs(hi)):
            pad = abs(hi) * 0.1 or 1.0
            lo, hi = lo - pad, hi + pad
        step = nice_step(hi - lo, target)
        return cls(math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step, p0, p1, step)

    @classmethod
    def exact(cls, lo: float, hi: float, p0: float, p1: float, target: int = 5) -> Axis:
        """For steps: exactly [lo, hi], ticks at the multiples of a nice whole step inside it."""
        if hi <= lo:
            hi = lo + 1
        return cls(lo, hi, p0, p1, max(1.0, nice_step(hi - lo, target)))  # steps are whole numbers

    def __call__(self, v: float) -> float:
        return round(self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0), 1)

    def ticks(self) -> list[tuple[float, str]]:
        """(pixel, label) of every tick value k * step in [lo, hi]."""
        d = _decimals(self.step)
        first, last = math.ceil(self.lo / self.step - 1e-9), math.floor(self.hi / self.step + 1e-9)
        return [(self(k * self.step), f"{k * self.step:.{d}f}") for k in range(first, last + 1)]


def _polyline(points: list[tuple[float, float]], colour: str, width: float = 1.5, extra: str = "") -> str:
    if len(points) == 1:  # a one-step log: a line of one point would not show
        return f'<circle cx="{points[0][0]:g}" cy="{points[0][1]:g}" r="{width + 1:g}" fill="{colour}"/>'
    coords = " ".join(f"{x:g},{y:g}" for x, y in points)
    return (f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="{width:g}" '
            f'stroke-linejoin="round"{extra}/>')


class Panel:
    """One plot: its frame, grid, ticks and titles; ``x`` and ``y`` map data to pixels."""

    def __init__(self, index: int, title: str, y_name: str, steps: tuple[int, int], y_range: tuple[float, float],
                 y_lo_zero: bool = False):
        self.left = index * PANEL_W + LEFT  # px of the plotting area's left edge
        self.top = HEADER + TOP
        self.title, self.y_name = title, y_name
        self.x = Axis.exact(steps[0], steps[1], self.left, self.left + PLOT_W, target=6)
        lo, hi = y_range
        self.y = Axis.padded(0.0 if y_lo_zero else lo, hi, self.top + PLOT_H, self.top)

    def frame(self) -> list[str]:
        """Gridlines and tick labels, the axes, the panel title and the axis names."""
        l, t, b = self.left, self.top, self.top + PLOT_H
        out = [f'<text x="{l}" y="{t - 22}" font-size="14" font-weight="bold">{escape(self.title)}</text>',
               f'<text x="{l}" y="{t - 8}" fill="#555555">{escape(self.y_name)}</text>']
        for py, label in self.y.ticks():
            out.append(f'<line x1="{l}" y1="{py:g}" x2="{l + PLOT_W}" y2="{py:g}" stroke="{GRID}"/>')
            out.append(f'<text x="{l - 6}" y="{py + 4:g}" text-anchor="end">{label}</text>')
        for px, label in self.x.ticks():
            out.append(f'<line x1="{px:g}" y1="{b}" x2="{px:g}" y2="{b + 4}" stroke="{INK}"/>')
            out.append(f'<text x="{px:g}" y="{b + 17}" text-anchor="middle">{label}</text>')
        out.append(f'<text x="{l + PLOT_W // 2}" y="{b + 36}" text-anchor="middle">step</text>')
        out.append(f'<polyline points="{l},{t} {l},{b} {l + PLOT_W},{b}" fill="none" stroke="{INK}"/>')
        return out

    def note(self, text: str) -> str:
        """A line of text in the middle of an empty plot."""
        return (f'<text x="{self.left + PLOT_W // 2}" y="{self.top + PLOT_H // 2}" text-anchor="middle" '
                f'fill="#777777">{escape(text)}</text>')


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _legend(x: float, y: float, rows: list[tuple[str, str]]) -> list[str]:
    """Rows of (colour, label), a short line then the label, from (x, y) down."""
    out = []
    for i, (colour, label) in enumerate(rows):
        yy = y + 15 * i
        out.append(f'<line x1="{x}" y1="{yy - 4}" x2="{x + 18}" y2="{yy - 4}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{x + 23}" y="{yy}">{escape(label)}</text>')
    return out


def render(records: list[dict]) -> str:
    """The SVG text of the three panels for the log's ``records`` (sorted by step)."""
    steps = [int(r["step"]) for r in records]
    x_range = (0, steps[-1])  # steps count from 1; a resumed run's log still reads against the whole schedule
    lines: list[str] = []

    # 1. Loss: every step, and the trailing mean.
    loss = [(s, float(r["loss"])) for s, r in zip(steps, records) if _finite(r.get("loss"))]
    mean = list(zip([s for s, _ in loss], trailing_mean([v for _, v in loss])))
    values = [v for _, v in loss] or [0.0]
    panel = Panel(0, "Training loss", "nats (label-smoothed cross-entropy)", x_range, (min(values), max(values)))
    lines += panel.frame()
    if loss:
        lines.append(_polyline([(panel.x(s), panel.y(v)) for s, v in loss], LOSS_RAW, 1))
        lines.append(_polyline([(panel.x(s), panel.y(v)) for s, v in mean], LOSS_MEAN, 2))
        lines += _legend(panel.left + PLOT_W - 120, panel.top + 14,
                         [(LOSS_RAW, "each step"), (LOSS_MEAN, f"mean of last {WINDOW}")])
    else:
        lines.append(panel.note("no loss in this log"))

    # 2. Temperature (null in the log for a model without one).
    temp = [(s, float(r["temperature"])) for s, r in zip(steps, records) if _finite(r.get("temperature"))]
    values = [v for _, v in temp] or [0.0]
    panel = Panel(1, "Temperature", "logits = cosine similarity / temperature", x_range,
                  (min(values), max(values)))
    lines += panel.frame()
    if temp:
        lines.append(_polyline([(panel.x(s), panel.y(v)) for s, v in temp], TEMPERATURE, 2))
    else:
        lines.append(panel.note("no temperature in this log"))

    # 3. Zero-shot top-1 at the evaluated steps, in %, and chance.
    evals = [(s, r["eval"]) for s, r in zip(steps, records) if isinstance(r.get("eval"), dict)]
    top1 = [(s, 100 * float(e["zero_shot_top1"])) for s, e in evals if _finite(e.get("zero_shot_top1"))]
    chance = [(s, 100 * float(e["chance"])) for s, e in evals if _finite(e.get("chance"))]
    values = [v for _, v in top1 + chance] or [100.0]
    panel = Panel(2, "Held-out zero-shot top-1", "% of test images", x_range, (0.0, max(values)), y_lo_zero=True)
    lines += panel.frame()
    if chance:  # flat before the first eval and after the last: chance is 1 / number of classes
        ends = [(x_range[0], chance[0][1])] + chance + [(x_range[1], chance[-1][1])]
        lines.append(_polyline([(panel.x(s), panel.y(v)) for s, v in ends], CHANCE, 1.5,
                               ' stroke-dasharray="5,4"'))
        last = chance[-1][1]
        lines.append(f'<text x="{panel.left + PLOT_W - 4}" y="{panel.y(last) - 5:g}" text-anchor="end" '
                     f'fill="{CHANCE}"{HALO}>chance {last:.1f}%</text>')
    if top1:
        lines.append(_polyline([(panel.x(s), panel.y(v)) for s, v in top1], ACCURACY, 2))
        for s, v in top1:
            lines.append(f'<circle cx="{panel.x(s):g}" cy="{panel.y(v):g}" r="3" fill="{ACCURACY}"/>')
        labelled = top1 if len(top1) <= 8 else top1[-1:]  # more labels than that would collide
        for s, v in labelled:
            lines.append(f'<text x="{panel.x(s):g}" y="{panel.y(v) - 8:g}" text-anchor="middle" '
                         f'fill="{ACCURACY}"{HALO}>{v:.1f}</text>')
    else:
        lines.append(panel.note("no evaluations in this log"))

    width, height = 3 * PANEL_W, HEADER + TOP + PLOT_H + BOTTOM
    head = [
        "<!-- generated by docs/figures/training_curves.py; do not edit by hand -->",
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" {FONT} font-size="12" fill="{INK}">'),
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        (f'<text x="{LEFT}" y="20" font-size="15">Training log: {_plural(len(records), "step")} '
         f'({steps[0]} to {steps[-1]}), evaluated at {_plural(len(evals), "step")}</text>'),
    ]
    return "\n".join(head + lines + ["</svg>"]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent,
                        help="where to write training_curves.svg (default: docs/figures)")
    parser.add_argument("--log", type=Path, default=LOG_PATH,
                        help="the train_log.jsonl to plot (default: align-nano's committed log)")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / OUT_NAME
    path.write_text(render(read_log(args.log)), encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
