"""Exercises 11-14: the two towers together, from the loss to the metrics.

References: ``loss.py`` (``l2_normalize``, ``align_loss``), ``training/backward.py``
(``align_loss_backward``), ``pipelines.py`` (``ensemble_label_embeddings``) and ``retrieval.py``
(``retrieval_metrics_from_scores``); torch's cross-entropy and autograd where installed.
"""

from __future__ import annotations

import functools

import numpy as np

from .. import loss
from ..backends.reference import softmax
from ..pipelines import ensemble_label_embeddings
from ..retrieval import retrieval_metrics_from_scores
from ..training import backward
from .checker import Case, Exercise, Mistake, torch_reference

F32 = np.float32
EPS = loss.LABEL_SMOOTHING


def _ce(logits, *, eps=EPS, smooth_axis=-1, tf_smoothing=False):
    """Mean cross-entropy with label smoothing, the target of row i being column i; the switches are
    known mistakes (all off: loss.cross_entropy)."""
    n, c = logits.shape
    logp = loss.log_softmax(logits.astype(np.float64))
    nll = -logp[np.arange(n), np.arange(n)]
    if tf_smoothing:  # eps / (C - 1) on the wrong classes only
        smooth = -(logp.sum(axis=-1) - logp[np.arange(n), np.arange(n)]) / (c - 1)
    else:
        smooth = -(logp if smooth_axis == -1 else loss.log_softmax(logits.T.astype(np.float64)).T).mean(axis=-1)
    return float(np.mean((1 - eps) * nll + eps * smooth))


# -- 11 the contrastive loss -------------------------------------------------------------------------


def _logits(text_embeds, image_embeds, temperature):  # [N, D], [N, D] -> [N, N], as AlignModel.logits
    return (loss.l2_normalize(text_embeds) @ loss.l2_normalize(image_embeds).T) / temperature


def _contrastive_reference(text_embeds, image_embeds, temperature):
    logits, targets = _logits(text_embeds, image_embeds, temperature), np.arange(len(text_embeds))
    return (loss.align_loss(logits), loss.cross_entropy(logits, targets, EPS),
            loss.cross_entropy(logits.T, targets, EPS))


def _contrastive_cases() -> list[Case]:
    rng = np.random.default_rng(11)

    def case(N, D, temperature):
        t = (rng.standard_normal((N, D)) * rng.uniform(0.5, 3, (N, 1))).astype(F32)  # norms differ
        v = (t + rng.standard_normal((N, D))).astype(F32) * F32(rng.uniform(0.5, 3))  # pairs roughly aligned
        return Case(f"N={N} pairs, D={D}, temperature {temperature}", (t, v, temperature))

    return [case(5, 7, 1.0), case(2, 3, 0.5), case(13, 4, 0.07), case(8, 16, 0.2)]


def _contrastive_variant(text_embeds, image_embeds, temperature, *, normalise=True, divide=True, eps=EPS,
                         image_direction="transpose", combine="mean", smooth_axis=-1, tf_smoothing=False):
    t, v = (loss.l2_normalize(a) if normalise else a for a in (text_embeds, image_embeds))
    z = (t @ v.T) / temperature if divide else (t @ v.T) * temperature
    ce = functools.partial(_ce, eps=eps, smooth_axis=smooth_axis, tf_smoothing=tf_smoothing)
    caption, image = ce(z), ce(z.T if image_direction == "transpose" else z)
    return (caption + image if combine == "sum" else (caption + image) / 2), caption, image


def _torch_contrastive(text_embeds, image_embeds, temperature):
    import torch

    z = torch.from_numpy(_logits(*(np.asarray(a, np.float64) for a in (text_embeds, image_embeds)), temperature))
    targets = torch.arange(len(z))
    caption, image = (float(torch.nn.functional.cross_entropy(logits, targets, label_smoothing=EPS))
                      for logits in (z, z.T))
    return (caption + image) / 2, caption, image


CONTRASTIVE_LOSS = Exercise(
    number="11", title="the contrastive loss, label-smoothed", file="11_contrastive_loss.py",
    function="contrastive_loss",
    teaches="ALIGN's loss: normalise, divide by the temperature, cross-entropy with label smoothing both ways, "
            "averaged",
    docs="loss.md#cross-entropy-with-label-smoothing",
    cases=_contrastive_cases, reference=_contrastive_reference,
    reference_name="minialign.loss (align_loss, and cross_entropy for each direction) on the normalised logits",
    outputs=("loss", "caption_loss", "image_loss"), atol=1e-5, rtol=1e-5,
    tolerance="float32 logits, a log-softmax over at most 13 classes",
    mistakes=(
        Mistake("L2-normalise both embeddings first: the logits are cosine similarities / temperature",
                functools.partial(_contrastive_variant, normalise=False)),
        Mistake("DIVIDE the similarities by the temperature (ALIGN's temperature plays CLIP's 1 / logit_scale)",
                functools.partial(_contrastive_variant, divide=False)),
        Mistake("label smoothing 0.1 is missing: the target puts 1 - 0.1 + 0.1/N on the pair and 0.1/N on every "
                "other column", functools.partial(_contrastive_variant, eps=0.0)),
        Mistake("the image direction is the cross-entropy of the COLUMNS: the same function on logits.T",
                functools.partial(_contrastive_variant, image_direction="same")),
        Mistake("transformers AVERAGES the two directions, (text loss + image loss) / 2 (the paper sums them)",
                functools.partial(_contrastive_variant, combine="sum")),
        Mistake("label smoothing is applied to the wrong axis: row n's smoothing term is -mean_c log p[n, c] with p "
                "the softmax of THAT row (rows of logits for the captions, of logits.T for the images); with the "
                "columns' softmax the two directions trade smoothing terms, which leaves their mean unchanged",
                functools.partial(_contrastive_variant, smooth_axis=0)),
        Mistake("torch's label smoothing spreads eps over ALL N classes, the true one included (eps/N each, "
                "1 - eps on top for the true one), not eps/(N-1) over the others",
                functools.partial(_contrastive_variant, tf_smoothing=True)),
    ),
    also=(torch_reference("torch.nn.functional.cross_entropy(label_smoothing=0.1) both ways (float64)",
                           _torch_contrastive, 1e-5, 1e-5),),
)


# -- 12 its gradient ---------------------------------------------------------------------------------


def _contrastive_backward_reference(logits_per_text):
    return backward.align_loss_backward(1.0, logits_per_text)


def _contrastive_backward_cases() -> list[Case]:
    rng = np.random.default_rng(12)
    cases = []
    for N in (3, 5, 8, 13):
        z = (rng.standard_normal((N, N)) * 3 + 4 * np.eye(N)).astype(F32)  # not symmetric, pairs score higher
        cases.append(Case(f"logits [{N}, {N}]", (z,)))
    return cases


def _contrastive_backward_variant(logits_per_text, *, transpose_back=True, half=True, per_pair=True, eps=EPS,
                                  image_axis=0):
    z = logits_per_text.astype(np.float64)
    n = len(z)
    q = (1 - eps) * np.eye(n) + eps / n  # the smoothed targets (symmetric)
    caption = softmax(z, axis=1) - q  # d CE(rows) / dz, times N
    image = softmax(z, axis=image_axis).T - q  # d CE(rows of z.T) / d z.T, times N
    grad = caption + (image.T if transpose_back else image)
    return grad * (0.5 if half else 1.0) / (n if per_pair else 1.0)


def _torch_contrastive_backward(logits_per_text):
    import torch

    z = torch.from_numpy(np.asarray(logits_per_text, np.float64)).requires_grad_(True)
    targets = torch.arange(len(z))
    ce = torch.nn.functional.cross_entropy
    ((ce(z, targets, label_smoothing=EPS) + ce(z.T, targets, label_smoothing=EPS)) / 2).backward()
    return z.grad.numpy()


CONTRASTIVE_LOSS_BACKWARD = Exercise(
    number="12", title="the contrastive loss's gradient", file="12_contrastive_loss_backward.py",
    function="contrastive_loss_backward",
    teaches="the gradient of a label-smoothed cross-entropy (softmax minus target) and of a loss over a "
            "transpose",
    docs="loss.md#both-directions-averaged",
    cases=_contrastive_backward_cases, reference=_contrastive_backward_reference,
    reference_name="minialign.training.backward.align_loss_backward",
    outputs=("dlogits",), atol=1e-6, rtol=1e-4, tolerance="float32 softmaxes; gradients are O(1/N)",
    mistakes=(
        Mistake("the image direction's gradient is taken with respect to logits.T: transpose it back before "
                "adding it to the text direction's", functools.partial(_contrastive_backward_variant,
                                                                        transpose_back=False)),
        Mistake("the image direction's softmax runs over each COLUMN of the logits (axis 0)",
                functools.partial(_contrastive_backward_variant, image_axis=1)),
        Mistake("the loss is the MEAN of the two directions: each direction's gradient gets a factor 1/2",
                functools.partial(_contrastive_backward_variant, half=False)),
        Mistake("each cross-entropy is a mean over the N rows: its gradient is (softmax - target) / N",
                functools.partial(_contrastive_backward_variant, per_pair=False)),
        Mistake("the target is the SMOOTHED one, q = 0.9 * one_hot + 0.1 / N, not the one-hot",
                functools.partial(_contrastive_backward_variant, eps=0.0)),
    ),
    also=(torch_reference("torch autograd through cross_entropy(label_smoothing=0.1) (float64)",
                           _torch_contrastive_backward, 1e-6, 1e-4),),
)


# -- 13 zero-shot classification with a prompt ensemble ----------------------------------------------


def _zero_shot_reference(image_embeds, template_embeds, temperature):
    # ZeroShotImageClassificationPipeline: label embeddings by ensemble, then softmax over the labels
    classes = ensemble_label_embeddings(template_embeds)  # [L, D]
    return softmax(loss.l2_normalize(image_embeds) @ classes.T / temperature, axis=-1)


def _zero_shot_cases() -> list[Case]:
    rng = np.random.default_rng(13)

    def case(B, L, K, D, temperature):
        images = (rng.standard_normal((B, D)) * rng.uniform(0.5, 4, (B, 1))).astype(F32)
        templates = (rng.standard_normal((L, K, D)) * rng.uniform(0.2, 5, (L, K, 1))).astype(F32)  # norms differ
        return Case(f"B={B} images, L={L} labels, K={K} templates, D={D}, temperature {temperature}",
                    (images, templates, temperature))

    return [case(3, 5, 4, 8, 0.5), case(1, 2, 1, 3, 1.0), case(4, 7, 3, 16, 0.2), case(2, 3, 5, 5, 0.1)]


def _zero_shot_variant(image_embeds, template_embeds, temperature, *, each=True, again=True, image=True, axis=-1,
                       divide=True):
    t = loss.l2_normalize(template_embeds) if each else template_embeds
    classes = t.mean(axis=1)
    classes = loss.l2_normalize(classes) if again else classes
    v = loss.l2_normalize(image_embeds) if image else image_embeds
    sims = v @ classes.T
    return softmax(sims / temperature if divide else sims * temperature, axis=axis)


ZERO_SHOT = Exercise(
    number="13", title="a zero-shot classifier with a prompt ensemble", file="13_zero_shot.py",
    function="zero_shot_probs",
    teaches="zero-shot classification: label embeddings from several templates (normalise, mean, normalise), "
            "cosine similarity / temperature, softmax over the labels",
    docs="zero-shot.md#prompt-ensembles",
    cases=_zero_shot_cases, reference=_zero_shot_reference,
    reference_name="minialign.pipelines (ensemble_label_embeddings, then the pipeline's softmax)",
    outputs=("probs",), atol=1e-5, rtol=1e-4, tolerance="float32, a softmax over at most 7 labels",
    mistakes=(
        Mistake("normalise EACH template's embedding before the mean, so that every wording weighs the same",
                functools.partial(_zero_shot_variant, each=False)),
        Mistake("normalise the mean again: the label embedding is normalise(mean_k normalise(t_lk))",
                functools.partial(_zero_shot_variant, again=False)),
        Mistake("normalise the image embeddings too: the scores are cosine similarities",
                functools.partial(_zero_shot_variant, image=False)),
        Mistake("the softmax runs over the LABELS (the last axis of [B, L]): each image's scores sum to 1",
                functools.partial(_zero_shot_variant, axis=0)),
        Mistake("DIVIDE the cosine similarities by the temperature",
                functools.partial(_zero_shot_variant, divide=False)),
    ),
)


# -- 14 recall@K -------------------------------------------------------------------------------------


def _recall_reference(scores, text_to_image, k):
    metrics = retrieval_metrics_from_scores(scores, text_to_image, ks=(k,))
    return metrics[f"image_retrieval_recall@{k}"], metrics[f"text_retrieval_recall@{k}"]


def _recall_variant(scores, text_to_image, k, *, any_caption=True, extra=0, ascending=False, swap=False,
                    ties_high_first=False):
    scores = -scores if ascending else scores
    n_texts, n_images = scores.shape

    def rank(row, target):  # candidates before `target` in row's order
        s = row[target]
        ties = np.arange(len(row)) > target if ties_high_first else np.arange(len(row)) < target
        return int(np.sum(row > s) + np.sum((row == s) & ties))

    image_hits = [rank(scores[t], text_to_image[t]) < k + extra for t in range(n_texts)]
    text_hits = []
    for i in range(n_images):
        captions = [t for t in range(n_texts) if text_to_image[t] == i]
        captions = captions if any_caption else captions[:1]
        text_hits.append(min(rank(scores[:, i], t) for t in captions) < k + extra)
    result = (float(np.mean(image_hits)), float(np.mean(text_hits)))
    return result[::-1] if swap else result


def _recall_cases() -> list[Case]:
    rng = np.random.default_rng(14)

    def case(name, text_to_image, k, ties=False):
        text_to_image = np.asarray(text_to_image)
        n_images = text_to_image.max() + 1
        scores = rng.standard_normal((len(text_to_image), n_images))
        scores[np.arange(len(text_to_image)), text_to_image] += 1.0  # right pairs score higher, mostly
        if ties:
            scores = np.round(scores * 2) / 2  # many exact ties
        return Case(f"{len(text_to_image)} captions of {n_images} images, k={k}{name}", (scores.astype(F32),
                                                                                       text_to_image, k))

    return [case(", 2 captions each", [0, 0, 1, 1, 2, 2], 1),
            case(", 1 to 3 captions per image", [0, 1, 1, 2, 3, 3, 3, 4, 5, 6, 6], 2),
            case("", np.arange(9), 5),
            case(", k larger than the number of candidates", [0, 1, 2, 3, 3], 10),
            case(", scores with many exact ties", [0, 1, 2, 3, 4, 0, 1, 2], 2, ties=True),
            Case("5 captions of 3 images, k=1, every score equal (only the order of ties decides)",
                 (np.zeros((5, 3), F32), np.asarray([0, 0, 0, 1, 2]), 1))]


RECALL_AT_K = Exercise(
    number="14", title="recall@K, both ways", file="14_recall_at_k.py", function="recall_at_k",
    teaches="retrieval metrics as CLIP_benchmark computes them: ranks, several captions per image, ties",
    docs="retrieval.md#recallk",
    cases=_recall_cases, reference=_recall_reference,
    reference_name="minialign.retrieval.retrieval_metrics_from_scores",
    outputs=("image_retrieval_recall", "text_retrieval_recall"), atol=1e-9, rtol=0.0,
    tolerance="fractions of whole counts",
    mistakes=(
        Mistake("an image is found when ANY of its captions is in its top k, not only its first caption",
                functools.partial(_recall_variant, any_caption=False)),
        Mistake("the top k are ranks 0 to k-1 (0-based): a hit is rank < k",
                functools.partial(_recall_variant, extra=1)),
        Mistake("rank candidates by score DESCENDING: the highest score is rank 0",
                functools.partial(_recall_variant, ascending=True)),
        Mistake("image retrieval = each CAPTION queries the images (the rows of scores); text retrieval = each "
                "image queries the captions (the columns): your two values are swapped",
                functools.partial(_recall_variant, swap=True)),
        Mistake("ties: candidates with equal scores are ranked by index, lower first "
                "(np.argsort(-s, kind='stable'))", functools.partial(_recall_variant, ties_high_first=True)),
    ),
)

EXERCISES = (CONTRASTIVE_LOSS, CONTRASTIVE_LOSS_BACKWARD, ZERO_SHOT, RECALL_AT_K)
