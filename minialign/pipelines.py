"""Zero-shot image classification: score an image against label names turned into sentences.

    labels ──► "This is a photo of {label}." ──► text tower + projection ──► normalise ──► c_l
    image  ──► image processor ──► vision tower ──► normalise ──► v
    scores = softmax_l( <c_l, v> / temperature )

With one template this is transformers' ``zero-shot-image-classification`` pipeline, score for
score. Beyond it, ``hypothesis_template`` may be a list of templates: each label's embedding is
then the normalised mean of its normalised template embeddings (prompt ensembling, as in CLIP's
paper and open_clip's ``build_zero_shot_classifier``), which usually helps more than any single
wording. Label embeddings are computed once per (labels, templates) and reused across images.

The module is ``pipelines`` (as transformers' ``transformers.pipelines``) and the function
``minialign.pipeline``: a submodule named like the function would replace it as an attribute of
the package whenever something imported the submodule first.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from .align_model import AlignModel
from .backends import DEFAULT_BACKEND
from .backends.reference import softmax
from .hub import DEFAULT_MODEL, EMBEDDED_MODELS_DIR
from .loss import l2_normalize
from .processing import AlignProcessor

DEFAULT_TEMPLATE = "This is a photo of {}."
# The embedded default model: a tiny ALIGN trained by `minialign train`, shipped in the package.
DEFAULT_MODEL_DIR = os.path.join(EMBEDDED_MODELS_DIR, DEFAULT_MODEL)


def default_model_dir() -> str:
    """The directory of the embedded default model (``from_pretrained("align-nano")`` finds it by
    name too), or a clear error in an installation that lacks it."""
    if not os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, "config.json")):
        raise FileNotFoundError(
            "minialign has no embedded default model in this installation (expected at "
            f"{DEFAULT_MODEL_DIR}); pass a model directory (--model DIR, or model=... in Python)"
        )
    return DEFAULT_MODEL_DIR


def _check_labels(candidate_labels) -> list[str]:
    if isinstance(candidate_labels, str):
        candidate_labels = [candidate_labels]
    if candidate_labels is None or len(candidate_labels) == 0:
        raise ValueError("zero-shot classification needs at least one candidate label")
    for i, label in enumerate(candidate_labels):
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"candidate_labels[{i}] = {label!r} must be a non-empty string")
    if len(set(candidate_labels)) != len(candidate_labels):
        raise ValueError(f"candidate_labels has duplicates: {sorted(candidate_labels)}")
    return list(candidate_labels)


def _check_templates(hypothesis_template) -> list[str]:
    templates = [hypothesis_template] if isinstance(hypothesis_template, str) else list(hypothesis_template)
    if not templates:
        raise ValueError("hypothesis_template is an empty list; pass at least one template")
    for t in templates:
        if not isinstance(t, str) or "{}" not in t:
            # Without "{}" every label would become the same sentence: silently useless scores.
            raise ValueError(f"hypothesis_template {t!r} must be a string containing '{{}}' for the label")
    return templates


def ensemble_label_embeddings(features: np.ndarray) -> np.ndarray:  # [L, K, P] -> [L, P], L2-normalised
    """Prompt ensembling: label l's embedding from its K template sentences' text features,

        c_l = normalise(mean_k normalise(features[l, k]))

    Each template is normalised before the mean, so that every wording weighs the same whatever
    its norm. With one template, c_l is that template's normalised embedding (no second
    normalisation: the same bits as transformers' pipeline).
    """
    per_template = l2_normalize(features)  # [L, K, P]
    return l2_normalize(per_template.mean(axis=1)) if features.shape[1] > 1 else per_template[:, 0]


class UnknownWordsWarning(UserWarning):
    """Candidate labels hold words that the model's vocabulary maps to [UNK]."""


def few(words: Sequence[str], shown: int = 5) -> str:
    """``'a', 'b', 'c' and 4 more``: a list of words for a one-line message, however long it is."""
    quoted = ", ".join(map(repr, words[:shown]))
    return quoted + (f" and {len(words) - shown} more" if len(words) > shown else "")


def unknown_words(tokenizer, labels: Sequence[str]) -> list[str]:
    """The words of ``labels`` (split on whitespace) that ``tokenizer`` reads as its unknown token,
    in order of first appearance: every such word is the same token to the text tower."""
    unknown: dict[str, None] = {}
    for label in labels:
        for word in label.split():
            if tokenizer.unk_token in tokenizer.tokenize(word):
                unknown[word] = None
    return list(unknown)


class ZeroShotImageClassificationPipeline:
    """``classifier(images, candidate_labels, hypothesis_template=...)``.

    One image gives ``[{"score", "label"}, ...]`` sorted by score; a list of images gives one
    such list per image. Scores are a softmax over the candidate labels.
    """

    def __init__(self, model: AlignModel, processor: AlignProcessor, *, cache_size: int = 32):
        self.model = model
        self.processor = processor
        self._label_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def label_embeddings(self, candidate_labels: Sequence[str], hypothesis_template=DEFAULT_TEMPLATE) -> np.ndarray:
        # labels [L], templates [K] -> [L, P], L2-normalised
        """One embedding per label: normalise(mean_k normalise(text(template_k.format(label))))."""
        labels, templates = _check_labels(candidate_labels), _check_templates(hypothesis_template)
        key = (tuple(labels), tuple(templates))
        if key in self._label_cache:
            self._label_cache.move_to_end(key)
            return self._label_cache[key]
        if unknown := unknown_words(self.processor.tokenizer, labels):
            warnings.warn(f"the model's vocabulary does not know {few(unknown)}: each reads as "
                          f"{self.processor.tokenizer.unk_token}, so labels that differ only in such words look "
                          "alike to the model and their scores say little", UnknownWordsWarning, stacklevel=3)
        sentences = [t.format(label) for label in labels for t in templates]  # label-major: [L*K]
        # padding=True (to the longest sentence), as transformers' pipeline tokenizes.
        tokens = self.processor(text=sentences, padding=True, truncation=True, max_length=None)
        features = self.model.get_text_features(tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"])
        embeddings = ensemble_label_embeddings(features.reshape(len(labels), len(templates), -1))
        self._label_cache[key] = embeddings
        if len(self._label_cache) > self._cache_size:
            self._label_cache.popitem(last=False)
        return embeddings

    def __call__(self, images, candidate_labels, hypothesis_template=DEFAULT_TEMPLATE):
        labels = _check_labels(candidate_labels)
        single = not isinstance(images, (list, tuple))
        batch = [images] if single else list(images)
        if not batch:
            raise ValueError("no images given")
        classes = self.label_embeddings(labels, hypothesis_template)  # [L, P]
        pixels = self.processor(images=batch)["pixel_values"]  # [B, 3, H, W]
        image_embeds = l2_normalize(self.model.get_image_features(pixels))  # [B, P]
        probs = softmax(self.model.logits(image_embeds, classes), axis=-1)  # [B, L]
        results = [
            [{"score": float(p[i]), "label": labels[i]} for i in np.argsort(-p, kind="stable")] for p in probs
        ]
        return results[0] if single else results


def pipeline(task: str, model: str | os.PathLike | AlignModel | None = None, *,
             processor: AlignProcessor | None = None, backend: str = DEFAULT_BACKEND, device: str | None = None,
             dtype: str = "float32") -> ZeroShotImageClassificationPipeline:
    """``minialign.pipeline("zero-shot-image-classification", model=...)`` as in transformers.

    ``model`` is a directory (or cached hub id), an ``AlignModel`` (then pass ``processor``
    too), or None for the embedded default model. ``backend``, ``device`` and ``dtype`` are
    passed to ``AlignModel.from_pretrained`` when the pipeline loads the model itself.
    """
    if task != "zero-shot-image-classification":
        raise ValueError(f"unknown task {task!r}; minialign has 'zero-shot-image-classification'")
    if isinstance(model, AlignModel):
        if processor is None:
            raise ValueError("pass processor=AlignProcessor(...) together with an AlignModel instance")
        return ZeroShotImageClassificationPipeline(model, processor)
    path = default_model_dir() if model is None else model
    loaded = AlignModel.from_pretrained(path, backend=backend, device=device, dtype=dtype)
    return ZeroShotImageClassificationPipeline(loaded, processor or AlignProcessor.from_pretrained(path))
