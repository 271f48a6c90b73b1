"""Layer-by-layer parity with transformers: which layer first diverges, and by how much.

The same processed batch goes through minialign's ``AlignModel`` and transformers' ``AlignModel``;
every intermediate both expose is compared, in the order the data flows:

    text.embeddings, text.layer.0 .. text.layer.{N-1}     BERT hidden states [B_t, T, H]
    text.pooler                                           tanh pooler [B_t, H]
    text.projection                                       get_text_features [B_t, P]
    vision.stem, vision.block.0 .. vision.block.{M-1}     EfficientNet hidden states, NCHW
    vision.pooled                                         pooled image features [B_i, P]
    text_embeds, image_embeds                             L2-normalised embeddings
    logits_per_text                                       [B_t, B_i]
    loss                                                  only when B_t == B_i

A bug shows up as the first row over tolerance; every row after it that depends on it fails too,
so the first failing row, not the number of failing rows, says where to look.

Errors, per row (a = minialign, b = transformers, both as float64; computed by
``minialign.array_errors``, the same code behind the test suite's ``assert_close``):

    max_abs = max |a - b|
    max_rel = max_abs / max(max |b|, tiny)          normwise: relative to the tensor's scale
    ok      = max_abs <= atol + rtol * max |b|

The relative error is normwise, not elementwise: hidden states have many entries near zero,
where |a - b| / |b| is large for any rounding difference and says nothing about the layer.

torch and transformers are imported only inside the functions that need them (the package
itself never imports them). The CLI is a thin wrapper::

    report = parity_report(model_dir, atol=..., rtol=...)
    print(json.dumps(report.to_json(), indent=2) if as_json else format_report(report))
    sys.exit(0 if report.ok else 1)
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .array_errors import array_errors


class MissingReferenceError(ImportError):
    """torch or transformers is not installed, so there is nothing to compare against."""


def _require_reference():
    """Import torch and transformers, or say how to install them."""
    try:
        import torch
        import transformers
    except ImportError as err:
        raise MissingReferenceError(
            f"the parity report runs transformers' ALIGN next to minialign's and needs torch and "
            f"transformers ({err}); install them with `pip install 'minialign[dev]'` "
            "(or `pip install torch transformers`)"
        ) from err
    return torch, transformers


# -- tolerances ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float  # times max |reference| of the row: a normwise relative tolerance


DEFAULT_TOLERANCES = {
    # Hidden states, pooled outputs, projections and unit embeddings in float32. LayerNorm keeps
    # BERT's hidden states O(1); EfficientNet's grow through the blocks (batchnorm, no LayerNorm),
    # hence rtol, which scales the allowance with the row's largest value. Rounding differences
    # (summation order, erf/exp implementations) measure ~1e-6 per layer and grow slowly with
    # depth; 1e-4 leaves ~100x room while any real bug (a wrong weight, eps, padding) is >1e-3.
    "hidden": Tolerance(atol=1e-4, rtol=1e-4),
    # Logits are cosines divided by the temperature (0.07 in align-base -> x14), so they carry
    # the embeddings' error times 1/temperature; the loss is a softmax cross-entropy of them.
    "logits": Tolerance(atol=1e-3, rtol=1e-4),
}


def default_tolerance(name: str) -> Tolerance:
    """The default tolerance for a row, by its name."""
    return DEFAULT_TOLERANCES["logits" if name in ("logits_per_text", "loss") else "hidden"]


# -- one row ---------------------------------------------------------------------------------


@dataclass
class ParityRow:
    name: str  # e.g. "text.layer.3", "vision.block.17"
    shape: tuple[int, ...]  # minialign's; see `note` when transformers' differs
    max_abs: float  # max |ours - theirs|; inf when the shapes differ or only one side is NaN/inf
    max_rel: float  # max_abs / max |theirs| (normwise)
    allowed: float  # atol + rtol * max |theirs|: the row is ok when max_abs <= allowed
    atol: float
    rtol: float
    ok: bool
    note: str = ""  # why a row could not be compared elementwise (shape mismatch, missing output)


def compare_arrays(name: str, ours, theirs, tolerance: Tolerance | None = None) -> ParityRow:
    """One row of the report: the errors of ``ours`` against the reference ``theirs``.

    NaN matching NaN and inf matching the same inf count as equal; a non-finite value on one
    side only is an infinite error. Mismatched shapes or a missing side give a failing row with
    a note, not an exception: a parity report should show such a bug, not die of it.
    """
    tol = tolerance or default_tolerance(name)
    if ours is None or theirs is None:
        missing = "minialign" if ours is None else "transformers"
        shape = tuple(np.shape(theirs if ours is None else ours))
        return ParityRow(name, shape, math.inf, math.inf, tol.atol, tol.atol, tol.rtol, False,
                         note=f"no {name} in {missing}'s outputs")
    if np.shape(ours) != np.shape(theirs):
        return ParityRow(name, np.shape(ours), math.inf, math.inf, tol.atol, tol.atol, tol.rtol, False,
                         note=f"shape {np.shape(ours)} in minialign, {np.shape(theirs)} in transformers")
    errors = array_errors(ours, theirs, atol=tol.atol, rtol=tol.rtol, normwise=True)
    return ParityRow(name, errors.shape, errors.max_abs, errors.max_rel, tol.atol + tol.rtol * errors.scale,
                     tol.atol, tol.rtol, errors.ok)


# -- the report ------------------------------------------------------------------------------


@dataclass
class ParityReport:
    rows: list[ParityRow]
    inputs: dict = field(default_factory=dict)  # what was compared: batch shapes, directories, versions

    @property
    def ok(self) -> bool:
        """Every row within tolerance (the CLI exits 1 otherwise)."""
        return all(row.ok for row in self.rows)

    @property
    def first_failure(self) -> ParityRow | None:
        """The first row over tolerance, in data-flow order: where to start looking."""
        return next((row for row in self.rows if not row.ok), None)

    def row(self, name: str) -> ParityRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row named {name!r}; rows are {[r.name for r in self.rows]}")

    def to_json(self) -> dict:
        """A JSON-serialisable dict (``json.dumps(report.to_json())``). Infinite errors (shape
        mismatch, one-sided NaN) are written as null, which strict JSON parsers accept."""

        def clean(value):
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return list(value) if isinstance(value, tuple) else value

        first = self.first_failure
        return {
            "ok": self.ok,
            "first_failure": first.name if first else None,
            "inputs": self.inputs,
            "rows": [{k: clean(v) for k, v in asdict(row).items()} for row in self.rows],
        }


def _shape_str(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def format_report(report: ParityReport) -> str:
    """A fixed-width table, one row per compared output, and a summary line.

    The first row over tolerance is marked ``<-- first divergence``; later failing rows show
    ``over``. "allowed" is atol + rtol * max|transformers| for that row.
    """
    first = report.first_failure
    header = ("layer", "shape", "max abs", "max rel", "allowed", "status")
    lines = []
    for row in report.rows:
        status = "ok" if row.ok else "over"
        if row is first:
            status += "  <-- first divergence"
        if row.note:
            status += f"  ({row.note})"
        lines.append((row.name, _shape_str(row.shape), f"{row.max_abs:.2e}", f"{row.max_rel:.2e}",
                      f"{row.allowed:.2e}", status))
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) if lines else len(header[i])
              for i in range(len(header) - 1)]

    def fmt(cells):
        name, shape, *numbers, status = cells
        out = [name.ljust(widths[0]), shape.ljust(widths[1])]
        out += [n.rjust(w) for n, w in zip(numbers, widths[2:])]
        return "  ".join(out + [status]).rstrip()

    text = []
    if report.inputs:
        text.append("parity: " + ", ".join(f"{k} {v}" for k, v in report.inputs.items()))
    text.append(fmt(header))
    text.append("-" * len(fmt(header)))
    text += [fmt(line) for line in lines]
    if first is None:
        text.append(f"all {len(report.rows)} layers within tolerance")
    else:
        n_over = sum(not row.ok for row in report.rows)
        text.append(
            f"first divergence at {first.name}: max abs {first.max_abs:.2e} > allowed {first.allowed:.2e} "
            f"(atol {first.atol:g} + rtol {first.rtol:g} x max|ref|); {n_over} of {len(report.rows)} layers over"
        )
    return "\n".join(text)


# -- inputs ----------------------------------------------------------------------------------

DEFAULT_TEXTS = (
    "a photo of a dog running on the beach",
    "a red car parked next to a small house",
    "two cats sitting in the grass",
)


def default_images(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    """``n`` seeded random uint8 RGB images [H, W, 3] of differing sizes and aspect ratios, so the
    processor's resize is exercised too."""
    rng = np.random.default_rng(seed)
    sizes = [(240, 320), (289, 289), (400, 260), (64, 90)]
    return [rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(n)]


def make_batch(processor, texts: Sequence[str] | None = None, images: Sequence | None = None,
               seed: int = 0) -> dict[str, np.ndarray]:
    """The processed batch both models see: input_ids, attention_mask, token_type_ids
    [B_t, T] and pixel_values [B_i, 3, H, W]. Defaults: DEFAULT_TEXTS and default_images()."""
    texts = list(DEFAULT_TEXTS if texts is None else texts)
    images = default_images(seed=seed) if images is None else list(images)
    return dict(processor(text=texts, images=images, return_tensors="np"))


# -- running both models ---------------------------------------------------------------------


def compare_models(ours, theirs, batch: Mapping[str, np.ndarray], *, atol: float | None = None,
                   rtol: float | None = None, inputs: dict | None = None) -> ParityReport:
    """Run ``batch`` through minialign's ``ours`` and transformers' ``theirs`` (put in eval mode
    here) and compare every intermediate. ``atol`` / ``rtol``, when given, replace the defaults
    (DEFAULT_TOLERANCES) for every row."""
    torch, _ = _require_reference()
    theirs.eval()
    ids, mask, types, pixels = (np.asarray(batch[k]) for k in
                                ("input_ids", "attention_mask", "token_type_ids", "pixel_values"))
    with_loss = ids.shape[0] == pixels.shape[0]

    out = ours(ids, pixels, mask, types, return_loss=with_loss, output_hidden_states=True)
    text_features = ours.get_text_features(ids, mask, types)

    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in
         (("input_ids", ids), ("attention_mask", mask), ("token_type_ids", types), ("pixel_values", pixels))}
    with torch.no_grad():
        ref = theirs(**t, return_loss=with_loss, output_hidden_states=True)
        ref_features = theirs.get_text_features(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
                                                token_type_ids=t["token_type_ids"])
    # transformers 5 returns an output object whose pooler_output is the projection; 4.x a tensor.
    ref_features = getattr(ref_features, "pooler_output", ref_features)

    def np_(x):
        return None if x is None else x.detach().float().cpu().numpy()

    pairs: list[tuple[str, object, object]] = []
    text, ref_text = out.text_model_output, ref.text_model_output
    for i, (a, b) in enumerate(_zip_longest(text.hidden_states, ref_text.hidden_states)):
        pairs.append(("text.embeddings" if i == 0 else f"text.layer.{i - 1}", a, np_(b)))
    pairs.append(("text.pooler", text.pooler_output, np_(ref_text.pooler_output)))
    pairs.append(("text.projection", text_features, np_(ref_features)))
    vision, ref_vision = out.vision_model_output, ref.vision_model_output
    for i, (a, b) in enumerate(_zip_longest(vision.hidden_states, ref_vision.hidden_states)):
        pairs.append(("vision.stem" if i == 0 else f"vision.block.{i - 1}", a, np_(b)))
    pairs.append(("vision.pooled", vision.pooler_output, np_(ref_vision.pooler_output)))
    pairs.append(("text_embeds", out.text_embeds, np_(ref.text_embeds)))
    pairs.append(("image_embeds", out.image_embeds, np_(ref.image_embeds)))
    pairs.append(("logits_per_text", out.logits_per_text, np_(ref.logits_per_text)))
    if with_loss:
        pairs.append(("loss", np.float64(out.loss), np_(ref.loss)))

    rows = []
    for name, a, b in pairs:
        tol = default_tolerance(name)
        tol = Tolerance(tol.atol if atol is None else atol, tol.rtol if rtol is None else rtol)
        rows.append(compare_arrays(name, a, b, tol))
    described = {"texts": f"{ids.shape[0]}x{ids.shape[1]} tokens",
                 "images": f"{pixels.shape[0]}x{_shape_str(pixels.shape[1:])}"}
    return ParityReport(rows, {**described, **(inputs or {})})


def _zip_longest(ours, theirs):
    ours, theirs = list(ours or ()), list(theirs or ())
    n = max(len(ours), len(theirs))
    return [(ours[i] if i < len(ours) else None, theirs[i] if i < len(theirs) else None) for i in range(n)]


def parity_report(model_dir: str | os.PathLike, *, reference_dir: str | os.PathLike | None = None,
                  texts: Sequence[str] | None = None, images: Sequence | None = None, seed: int = 0,
                  atol: float | None = None, rtol: float | None = None) -> ParityReport:
    """Load ``model_dir`` in minialign and ``reference_dir`` (default: the same directory) in
    transformers (float32, eager attention, eval mode), process ``texts`` / ``images`` once with
    minialign's AlignProcessor from ``model_dir``, and compare layer by layer.

    Hub ids found in the local Hugging Face cache work for both directories.
    """
    torch, transformers = _require_reference()
    from .align_model import AlignModel
    from .hub import resolve_model_dir
    from .processing import AlignProcessor

    model_dir = resolve_model_dir(model_dir)
    reference_dir = model_dir if reference_dir is None else resolve_model_dir(reference_dir)
    ours = AlignModel.from_pretrained(model_dir)
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # stderr is for our messages; the report is the output
    try:
        theirs = transformers.AlignModel.from_pretrained(reference_dir, attn_implementation="eager",
                                                         dtype=torch.float32)
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    batch = make_batch(AlignProcessor.from_pretrained(model_dir), texts, images, seed)
    inputs = {"minialign": model_dir, "transformers": f"{transformers.__version__} {reference_dir}"}
    return compare_models(ours, theirs, batch, atol=atol, rtol=rtol, inputs=inputs)
