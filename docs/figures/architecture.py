"""Write the architecture figures of docs/figures/: the model drawn, with the shapes at every step.

Run from the repository root:  python docs/figures/architecture.py
(tests/test_docs.py re-runs it into a temporary folder and checks the committed SVGs are its output.)

    dual_encoder.svg          ALIGN end to end: processor, both towers, projection, normalisation, logits, loss
    logit_matrix.svg          the N x N logit matrix and its label-smoothed targets
    bert_layer.svg            one BERT encoder layer
    mbconv_block.svg          one MBConv block with squeeze-excitation: where the stride and the skip apply
    efficientnet_stages.svg   EfficientNet-B7's seven stages at 289x289: width and map size

Every number in the figures is read from the code, not typed here: the configs' defaults
(align-base, ``minialign.config``), the image processor's align-base settings, the blocks from
``docs/gen_block_table.py`` (``block_rows``: ``block_specs`` and the padding rule), the label
smoothing from ``minialign.loss``. The SVG is written as text (no plotting library, no
randomness), so the output depends only on the code.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from html import escape
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from minialign.config import AlignConfig  # noqa: E402
from minialign.image_processing import EfficientNetImageProcessor  # noqa: E402
from minialign.loss import LABEL_SMOOTHING  # noqa: E402

FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'
INK = "#222222"
MUTED = "#666666"
IMAGE = "#dbe9f6"  # the image tower's boxes
TEXT = "#fde3c8"  # the text tower's boxes
JOINT = "#dcefd8"  # what both towers share: normalisation, logits, loss
SKIP = "#d62728"  # residual / skip paths
GATE = "#9467bd"  # the squeeze-excitation gate


def _block_table():
    spec = importlib.util.spec_from_file_location("gen_block_table", HERE.parent / "gen_block_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Svg:
    """A list of SVG elements, written out with a fixed header, an arrow marker and a footer."""

    def __init__(self, width: int, height: int, title: str):
        self.width, self.height = width, height
        self.items: list[str] = []
        self.text(16, 24, title, size=15, weight="bold")

    def text(self, x, y, s, size=12, anchor="start", weight="normal", fill=INK, italic=False):
        extra = ' font-weight="bold"' if weight == "bold" else ""
        extra += ' font-style="italic"' if italic else ""
        self.items.append(f'<text x="{x:g}" y="{y:g}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"'
                          f'{extra}>{escape(s)}</text>')

    def box(self, x, y, w, h, lines, fill="#ffffff", stroke=INK, dash=False, size=12):
        """A rounded box with lines of text centred in it; the first line bold."""
        extra = ' stroke-dasharray="5 3"' if dash else ""
        self.items.append(f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" rx="6" fill="{fill}" '
                          f'stroke="{stroke}" stroke-width="1.2"{extra}/>')
        step = size + 4
        top = y + h / 2 - (len(lines) - 1) * step / 2 + size / 3
        for n, line in enumerate(lines):
            self.text(x + w / 2, top + n * step, line, size=size if n == 0 else size - 1, anchor="middle",
                      weight="bold" if n == 0 else "normal", fill=INK if n == 0 else "#333333")

    def rect(self, x, y, w, h, fill="none", stroke=INK, stroke_width=1.0):
        self.items.append(f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" fill="{fill}" '
                          f'stroke="{stroke}" stroke-width="{stroke_width:g}"/>')

    def line(self, points, colour=INK, arrow=True, dash=False, width=1.5):
        path = " ".join(f"{x:g},{y:g}" for x, y in points)
        extra = ' marker-end="url(#arrow)"' if arrow and colour == INK else ""
        extra += f' marker-end="url(#arrow-{colour[1:]})"' if arrow and colour != INK else ""
        extra += ' stroke-dasharray="5 3"' if dash else ""
        self.items.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="{width:g}"{extra}/>')

    def circle(self, x, y, r, label, colour=INK):
        self.items.append(f'<circle cx="{x:g}" cy="{y:g}" r="{r:g}" fill="#ffffff" stroke="{colour}" '
                          f'stroke-width="1.5"/>')
        self.text(x, y + 5, label, size=15, anchor="middle", weight="bold", fill=colour)

    def render(self, name: str) -> str:
        markers = "".join(
            f'<marker id="arrow{suffix}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            f'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="{colour}"/></marker>'
            for suffix, colour in (("", INK), (f"-{SKIP[1:]}", SKIP), (f"-{GATE[1:]}", GATE)))
        head = [
            "<!-- generated by docs/figures/architecture.py; do not edit by hand -->",
            (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
             f'viewBox="0 0 {self.width} {self.height}" {FONT}>'),
            f"<title>{escape(name)}</title>",
            f"<defs>{markers}</defs>",
            f'<rect width="{self.width}" height="{self.height}" fill="#ffffff"/>',
        ]
        return "\n".join(head + self.items + ["</svg>"]) + "\n"


# ---- (a) the dual encoder ---------------------------------------------------------------------------

def dual_encoder() -> Svg:
    config = AlignConfig()  # align-base's defaults
    text, vision = config.text_config, config.vision_config
    processor = EfficientNetImageProcessor.align_base()
    size, crop = processor.size["height"], processor.crop_size["height"]
    rows = _block_table().block_rows(vision, crop)
    last = rows[-1]
    pooled, final_h = last["spec"].out_dim, last["h_out"]
    P = config.projection_dim
    svg = Svg(700, 690, "ALIGN (align-base): two towers, one similarity")
    left, right, w, h, gap = 30, 370, 300, 54, 22
    svg.text(left + w / 2, 56, "image tower (EfficientNet-B7)", size=13, anchor="middle", weight="bold")
    svg.text(right + w / 2, 56, "text tower (BERT-base)", size=13, anchor="middle", weight="bold")
    image_steps = [
        ["image (any size, RGB)", "a file, a PIL image or an array"],
        ["EfficientNetImageProcessor", f"resize {size}x{size}, crop {crop}x{crop}, x / 127.5 - 1"],
        ["pixel_values", f"[B, 3, {crop}, {crop}]"],
        ["stem + " + str(len(rows)) + " MBConv blocks", f"-> [B, {final_h}, {final_h}, {pooled}] (channels-last)"],
        [f"mean over the {final_h}x{final_h} map", f"pooler_output [B, {pooled}]   (no projection)"],
    ]
    text_steps = [
        ["caption (alt-text)", '"a photo of a red circle"'],
        ["BertTokenizer (WordPiece)", f"input_ids, attention_mask [B, T], T <= {text.max_position_embeddings}"],
        ["embeddings", f"word + position + type, LayerNorm [B, T, {text.hidden_size}]"],
        [f"{text.num_hidden_layers} BERT layers", f"{text.num_attention_heads} heads; last_hidden_state [B, T, {text.hidden_size}]"],
        ["take the [CLS] row, then text_projection", f"[B, {text.hidden_size}] -> [B, {P}]"],
    ]
    y0 = 70
    for column, steps, fill in ((left, image_steps, IMAGE), (right, text_steps, TEXT)):
        for n, lines in enumerate(steps):
            y = y0 + n * (h + gap)
            svg.box(column, y, w, h, lines, fill=fill)
            if n:
                svg.line([(column + w / 2, y - gap), (column + w / 2, y)])
    y_norm = y0 + len(image_steps) * (h + gap)
    for column, name in ((left, "v"), (right, "t")):
        svg.line([(column + w / 2, y_norm - gap), (column + w / 2, y_norm)])
        svg.box(column, y_norm, w, h, ["L2-normalise each row", f"{name} [B, {P}], |{name}_i| = 1"], fill=JOINT)
    y_logits = y_norm + h + 40
    mid = (left + right + w) / 2
    svg.line([(left + w / 2, y_norm + h), (left + w / 2, y_norm + h + 20), (mid - 80, y_logits)])
    svg.line([(right + w / 2, y_norm + h), (right + w / 2, y_norm + h + 20), (mid + 80, y_logits)])
    svg.box(mid - 170, y_logits, 340, h, ["logits_per_text Z = t v\u1d40 / temperature",
                                          "[B, B] cosine similarities, divided by a learned scalar"], fill=JOINT)
    svg.line([(mid, y_logits + h), (mid, y_logits + h + gap)])
    svg.box(mid - 170, y_logits + h + gap, 340, h,
            ["align_loss: cross-entropy both ways", f"rows and columns, label smoothing {LABEL_SMOOTHING:g}"],
            fill=JOINT)
    return svg


# ---- (b) the logit matrix and its targets --------------------------------------------------------------

def logit_matrix(n: int = 4) -> Svg:
    eps = LABEL_SMOOTHING
    on, off = 1 - eps + eps / n, eps / n
    svg = Svg(700, 440, f"A batch of N = {n} pairs: the logit matrix and its targets")
    cell = 56
    x0, y0 = 110, 100
    svg.text(x0 + n * cell / 2, 62, "Z = t v\u1d40 / temperature", size=13, anchor="middle", weight="bold")
    for j in range(n):
        svg.text(x0 + j * cell + cell / 2, y0 - 10, f"image {j}", size=11, anchor="middle")
    for i in range(n):
        svg.text(x0 - 8, y0 + i * cell + cell / 2 + 4, f"caption {i}", size=11, anchor="end")
        for j in range(n):
            fill = JOINT if i == j else "#f4f4f4"
            svg.rect(x0 + j * cell, y0 + i * cell, cell, cell, fill=fill, stroke="#ffffff", stroke_width=2)
            svg.text(x0 + j * cell + cell / 2, y0 + i * cell + cell / 2 + 4, f"Z{i}{j}", size=12, anchor="middle",
                     weight="bold" if i == j else "normal")
    mid_y = y0 + n * cell / 2
    svg.line([(x0 + n * cell + 12, mid_y), (460 - 12, mid_y)])
    svg.text((x0 + n * cell + 460) / 2, mid_y - 10, "softmax", size=11, anchor="middle", fill=MUTED)
    svg.text((x0 + n * cell + 460) / 2, mid_y + 18, "vs. targets", size=11, anchor="middle", fill=MUTED)
    svg.text(x0 + n * cell / 2, y0 + n * cell + 22, "row i: caption i picks among the N images", size=11,
             anchor="middle")
    svg.text(x0 + n * cell / 2, y0 + n * cell + 38, "column j: image j picks among the N captions", size=11,
             anchor="middle")
    # The smoothed targets.
    x1 = 460
    svg.text(x1 + n * cell / 2, 62, f"targets Q = {1 - eps:g} I + {eps:g} / N", size=13, anchor="middle",
             weight="bold")
    for i in range(n):
        for j in range(n):
            fill = "#a1d99b" if i == j else "#f4f4f4"
            svg.rect(x1 + j * cell, y0 + i * cell, cell, cell, fill=fill, stroke="#ffffff", stroke_width=2)
            svg.text(x1 + j * cell + cell / 2, y0 + i * cell + cell / 2 + 4, f"{on if i == j else off:.3f}", size=11,
                     anchor="middle")
    svg.text(x1 + n * cell / 2, y0 + n * cell + 22, f"each row and each column sums to 1", size=11,
             anchor="middle")
    svg.text(x1 + n * cell / 2, y0 + n * cell + 38, f"diagonal {1 - eps:g} + {eps:g}/{n}, elsewhere {eps:g}/{n}",
             size=11, anchor="middle")
    svg.text(16, y0 + n * cell + 72, "loss = ( mean over rows of CE(softmax of row i, row i of Q)", size=12)
    svg.text(16, y0 + n * cell + 90, "         + mean over columns of CE(softmax of column j, column j of Q) ) / 2",
             size=12)
    return svg


# ---- (c) one BERT layer -----------------------------------------------------------------------------------

def bert_layer() -> Svg:
    text = AlignConfig().text_config
    H, heads, d, inter = text.hidden_size, text.num_attention_heads, text.head_dim, text.intermediate_size
    svg = Svg(700, 700, f"One BERT layer (align-base: hidden {H}, {heads} heads of {d})")
    x, w, h, gap = 190, 320, 46, 16
    steps = [
        (["x", f"[B, T, {H}]"], "#ffffff"),
        (["query, key, value: three linears", f"{H} -> {H} each, split into {heads} heads of {d}"], TEXT),
        (["scores = q k\u1d40 / sqrt(" + str(d) + ") + mask bias", f"[B, {heads}, T, T]; padded keys get float32 min"], TEXT),
        (["softmax over the keys, times v", f"[B, {heads}, T, {d}], heads merged -> [B, T, {H}]"], TEXT),
        (["attention.output.dense", f"{H} -> {H}"], TEXT),
        (["add x, LayerNorm", f"[B, T, {H}]"], JOINT),
        (["intermediate.dense + GELU", f"{H} -> {inter}"], TEXT),
        (["output.dense", f"{inter} -> {H}"], TEXT),
        (["add, LayerNorm", f"[B, T, {H}]: the next layer's x"], JOINT),
    ]
    ys = []
    for n, (lines, fill) in enumerate(steps):
        y = 50 + n * (h + gap) + (20 if n >= 6 else 0)
        ys.append(y)
        svg.box(x, y, w, h, lines, fill=fill)
        if n:
            svg.line([(x + w / 2, ys[n - 1] + h), (x + w / 2, y)])
    # The two residual paths, on the right.
    for start, end, label in ((0, 5, "residual"), (5, 8, "residual")):
        xr = x + w + 40
        svg.line([(x + w, ys[start] + h / 2 + (6 if start else 0)), (xr, ys[start] + h / 2 + (6 if start else 0)),
                  (xr, ys[end] + h / 2), (x + w + 2, ys[end] + h / 2)], colour=SKIP)
        svg.text(xr + 6, (ys[start] + ys[end]) / 2 + h / 2, label, size=11, fill=SKIP)
    svg.text(x - 14, (ys[1] + ys[4] + h) / 2, "self-attention", size=12, anchor="end", weight="bold")
    svg.text(x - 14, (ys[6] + ys[7] + h) / 2, "feed-forward", size=12, anchor="end", weight="bold")
    svg.text(16, 690, "Post-LN (the original BERT): each sub-layer's output is added to its input, then normalised.",
             size=11, fill=MUTED)
    return svg


# ---- (d) one MBConv block -------------------------------------------------------------------------------

def mbconv_block() -> Svg:
    rows = _block_table().block_rows()
    first = next(r for r in rows if r["stage"] == 2)  # the first block of stage 2: stride 2, no skip
    repeat = next(r for r in rows if r["stage"] == 2 and r["spec"].residual)  # a repeat: stride 1, skip
    a, b = first["spec"], repeat["spec"]
    svg = Svg(700, 590, "One MBConv block with squeeze-excitation (align-base, stage 2)")
    x, w, h, gap = 130, 330, 50, 22
    steps = [
        ["input", f"[B, H, W, C_in]"],
        ["expand: 1x1 conv + BN + SiLU", "C_in -> C_in x ratio (skipped when ratio = 1)"],
        ["depthwise k x k conv, stride s + BN + SiLU", "one filter per channel; H, W -> H/s, W/s"],
        ["\u00d7 gate (squeeze-excitation)", "each channel scaled by g[b, c] in (0, 1)"],
        ["project: 1x1 conv + BN, no activation", "-> C_out (the linear bottleneck)"],
        ["+ input (skip)", "only for a stage's repeats: stride 1, C_in = C_out"],
    ]
    ys = [50 + n * (h + gap) for n in range(len(steps))]
    for n, (lines, y) in enumerate(zip(steps, ys)):
        fill = {2: IMAGE, 3: "#eadcf4", 5: "#fbe0e0"}.get(n, IMAGE if n else "#ffffff")
        svg.box(x, y, w, h, lines, fill=fill, dash=(n == 1))
        if n:
            svg.line([(x + w / 2, ys[n - 1] + h), (x + w / 2, y)])
    svg.line([(x + w / 2, ys[-1] + h), (x + w / 2, ys[-1] + h + gap)])
    svg.text(x + w / 2, ys[-1] + h + gap + 16, "output [B, H/s, W/s, C_out]", size=12, anchor="middle", weight="bold")
    # The squeeze-excitation branch, to the right of the depthwise output.
    bx, bw = x + w + 36, 170
    se = [["mean over H, W", "[B, C]"], ["reduce 1x1 + SiLU", f"C -> se_dim (C_in / 4)"],
          ["expand 1x1 + sigmoid", "se_dim -> C: the gate g"]]
    sy = [ys[2] - 10 + n * 56 for n in range(3)]
    for n, (lines, y) in enumerate(zip(se, sy)):
        svg.box(bx, y, bw, 44, lines, fill="#eadcf4", stroke=GATE, size=11)
        if n:
            svg.line([(bx + bw / 2, sy[n - 1] + 44), (bx + bw / 2, y)], colour=GATE)
    svg.line([(x + w, ys[2] + h / 2 + 6), (bx, sy[0] + 22)], colour=GATE)
    svg.line([(bx, sy[2] + 22), (x + w + 2, ys[3] + h / 2)], colour=GATE)
    # The skip, on the left.
    xl = x - 34
    svg.line([(x, ys[0] + h / 2), (xl, ys[0] + h / 2), (xl, ys[5] + h / 2), (x - 2, ys[5] + h / 2)], colour=SKIP,
             dash=True)
    svg.text(xl - 6, (ys[0] + ys[5]) / 2 + h / 2, "skip", size=11, anchor="end", fill=SKIP)
    # Two blocks of stage 2, their numbers from block_specs.
    notes = [
        f"block {a.index} (first of stage 2): {a.in_dim} -> {a.expand_dim} -> {a.out_dim} channels, "
        f"{a.kernel_size}x{a.kernel_size}, stride {a.stride}, {first['h_in']}x{first['h_in']} -> "
        f"{first['h_out']}x{first['h_out']}, se_dim {a.se_dim}, no skip",
        f"block {b.index} (a repeat): {b.in_dim} -> {b.expand_dim} -> {b.out_dim} channels, "
        f"{b.kernel_size}x{b.kernel_size}, stride {b.stride}, {repeat['h_in']}x{repeat['h_in']} -> "
        f"{repeat['h_out']}x{repeat['h_out']}, se_dim {b.se_dim}, skip",
    ]
    for n, note in enumerate(notes):
        svg.text(16, 546 + n * 18, note, size=11)
    return svg


# ---- (e) EfficientNet-B7's stages ---------------------------------------------------------------------------

def efficientnet_stages() -> Svg:
    table = _block_table()
    config = AlignConfig().vision_config
    rows = table.block_rows(config)
    stem = table.stem_size(config)
    stages = []
    for stage in sorted({r["stage"] for r in rows}):
        blocks = [r for r in rows if r["stage"] == stage]
        spec = blocks[0]["spec"]
        stages.append({"stage": stage, "blocks": len(blocks), "out": blocks[-1]["spec"].out_dim,
                       "expand": max(r["spec"].expand_dim for r in blocks), "k": spec.kernel_size,
                       "stride": spec.stride, "h": blocks[-1]["h_out"], "h_in": blocks[0]["h_in"]})
    svg = Svg(700, 480, f"EfficientNet-B7 in align-base at {table.IMAGE_SIZE}x{table.IMAGE_SIZE}: "
                        f"{len(rows)} blocks in {len(stages)} stages")
    x0, col = 90, 84
    top_y, top_h = 60, 170  # channels panel
    bot_y, bot_h = 280, 120  # map-size panel
    max_c = max(s["expand"] for s in stages)
    max_h = stem
    svg.text(16, top_y + 4, "channels", size=12, weight="bold")
    svg.text(16, bot_y + 4, "map size", size=12, weight="bold")
    for n, s in enumerate(stages):
        cx = x0 + n * col
        # Channels: the depthwise (expanded) width light, the stage's output width dark, on one scale.
        e_h = top_h * s["expand"] / max_c
        o_h = top_h * s["out"] / max_c
        svg.rect(cx, top_y + top_h - e_h, 30, e_h, fill=IMAGE, stroke="#8fb3d9")
        svg.rect(cx + 32, top_y + top_h - o_h, 30, max(o_h, 1), fill="#3b78b8", stroke="#3b78b8")
        svg.text(cx + 15, top_y + top_h - e_h - 4, str(s["expand"]), size=10, anchor="middle")
        svg.text(cx + 47, top_y + top_h - o_h - 4, str(s["out"]), size=10, anchor="middle", fill="#1f4e80")
        # Map size: a square whose side is proportional to H.
        side = 60 * s["h"] / max_h
        svg.rect(cx + 31 - side / 2, bot_y + 60 - side / 2, side, side, fill="#fdd0a2", stroke="#d98b3a")
        svg.text(cx + 31, bot_y + bot_h - 10, f"{s['h']}x{s['h']}", size=11, anchor="middle")
        svg.text(cx + 31, top_y + top_h + 18, f"stage {s['stage']}", size=11, anchor="middle", weight="bold")
        svg.text(cx + 31, top_y + top_h + 33, f"{s['blocks']} blocks, k{s['k']}", size=10, anchor="middle")
        svg.text(cx + 31, top_y + top_h + 47, f"stride {s['stride']}", size=10, anchor="middle")
    svg.rect(x0, 436, 14, 12, fill=IMAGE, stroke="#8fb3d9")
    svg.text(x0 + 20, 446, "depthwise (expanded) width", size=11)
    svg.rect(x0 + 210, 436, 14, 12, fill="#3b78b8", stroke="#3b78b8")
    svg.text(x0 + 230, 446, "output width", size=11)
    svg.text(x0 + 330, 446, f"map size after the stage (stem: {stem}x{stem})", size=11)
    svg.text(16, 470, "Each stage's first block takes the stride; the blocks after it keep the width and the map.",
             size=11, fill=MUTED)
    return svg


FIGURES = {
    "dual_encoder.svg": dual_encoder,
    "logit_matrix.svg": logit_matrix,
    "bert_layer.svg": bert_layer,
    "mbconv_block.svg": mbconv_block,
    "efficientnet_stages.svg": efficientnet_stages,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(HERE), help="where to write the SVGs (default: docs/figures)")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, draw in FIGURES.items():
        (out / name).write_text(draw().render(name), encoding="utf-8")
        print(f"wrote {out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
