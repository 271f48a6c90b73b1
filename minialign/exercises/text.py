"""Exercises 01-07: the text side, from WordPiece to one BERT layer.

Each exercise's reference is the project's own code (``tokenizer.py``, ``backends/reference.py``,
``training/backward.py``, ``text_model.py``); its known mistakes are small, deliberately wrong
variants of it, each with the hint a student who made that mistake needs.
"""

from __future__ import annotations

import functools
import itertools
import math
import string
import types
import unicodedata

import numpy as np

from .. import tokenizer as tok
from ..backends import reference
from ..training import backward
from .checker import Case, Exercise, Mistake, Reference, torch_reference

F32 = np.float32


# -- 01 WordPiece ------------------------------------------------------------------------------

# The module docstring's example ("unaffable" -> un ##aff ##able) and pieces over {a, b, c} where
# the longest match and other splits disagree.
_VOCAB = {t: i for i, t in enumerate(
    "[UNK] un ##aff ##able hug ##ging ##s play ##ing ##ed ##er a b c ##a ##b ##c ab ##ab abc ##bc ##ca".split())}


def _greedy(word, vocab, unk_token="[UNK]", max_chars=100, *, prefix="##", longest=True, keep_partial=False,
            limit=lambda n, m: n > m):
    """WordPiece with switches for the known mistakes (all on their defaults: tokenizer.wordpiece)."""
    if limit(len(word), max_chars):
        return [unk_token]
    pieces, start = [], 0
    while start < len(word):
        ends = range(len(word), start, -1) if longest else range(start + 1, len(word) + 1)
        for end in ends:
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                break
        else:
            return pieces + [unk_token] if keep_partial else [unk_token]
        pieces.append(piece)
        start = end
    return pieces


def _wordpiece_reference(word, vocab, unk_token="[UNK]", max_chars=100):
    return tok.wordpiece(word, vocab, unk_token, max_chars)


def _wordpiece_cases() -> list[Case]:
    rng = np.random.default_rng(1)
    words = ["unaffable", "hugs", "hugging", "playing", "player", "abcab", "cab", "unplayable", "d", "abd"]
    words += ["".join(rng.choice(list("abc"), size=int(rng.integers(1, 10)))) for _ in range(12)]
    cases = [Case(f"the word {w!r}", (w, _VOCAB)) for w in words]
    cases += [Case("'abcabcabc' (9 characters), max_chars=8", ("abcabcabc", _VOCAB, "[UNK]", 8)),
              Case("'abcabcab' (8 characters), max_chars=8", ("abcabcab", _VOCAB, "[UNK]", 8)),
              Case("'abcd' with unk_token='<unk>'", ("abcd", _VOCAB, "<unk>"))]
    return cases


WORDPIECE = Exercise(
    number="01", title="WordPiece, greedy longest-match-first", file="01_wordpiece.py", function="wordpiece",
    teaches="how BERT splits a word into vocabulary pieces: greedy longest match, ## continuations, [UNK]",
    docs="tokenizer.md#seven-steps",
    cases=_wordpiece_cases, reference=_wordpiece_reference, reference_name="minialign.tokenizer.wordpiece",
    outputs=("pieces",), atol=0.0, rtol=0.0, tolerance="token lists", exact=True,
    mistakes=(
        Mistake('every piece after the first is looked up, and returned, with the "##" prefix: '
                "unaffable -> un ##aff ##able", functools.partial(_greedy, prefix="")),
        Mistake("take the LONGEST piece in the vocabulary at each position: try the end positions from the "
                "end of the word down to start + 1", functools.partial(_greedy, longest=False)),
        Mistake("when some position has no piece in the vocabulary, the WHOLE word is one unk_token: drop the "
                "pieces found before it", functools.partial(_greedy, keep_partial=True)),
        Mistake("return the unk_token argument, not a hard-coded '[UNK]'",
                lambda word, vocab, unk_token="[UNK]", max_chars=100: _greedy(word, vocab, "[UNK]", max_chars)),
        Mistake("a word longer than max_chars characters is unk_token at once, before looking for pieces",
                functools.partial(_greedy, limit=lambda n, m: False)),
        Mistake("only words LONGER than max_chars are unk_token: a word of exactly max_chars characters is "
                "still split", functools.partial(_greedy, limit=lambda n, m: n >= m)),
    ),
)


# -- 02 BERT's basic tokenisation ----------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _tokenizer(do_lower_case: bool) -> tok.BertTokenizer:
    # align-nano's vocabulary; strip_accents=None: strip exactly when lower-casing, as BERT's default
    return tok.BertTokenizer.from_pretrained("align-nano", do_lower_case=do_lower_case, strip_accents=None)


def _basic_tokenize_reference(text: str, do_lower_case: bool = True) -> list[str]:
    # BertTokenizer's steps 2-6 (clean, CJK, accents, lower case, whitespace and punctuation split)
    return _tokenizer(do_lower_case)._basic_tokenize(text)


def _basic_variant(text, do_lower_case=True, *, clean=tok.clean_text, cjk=tok.space_cjk, strip=tok.strip_accents,
                   split=tok.split_punctuation, strip_always=False):
    """Steps 2-6 in the tokenizer's order, with one step swapped for a known mistake."""
    words = []
    for word in cjk(clean(text)).split(" "):
        if word:
            if do_lower_case or strip_always:
                word = strip(word)
            if do_lower_case:
                word = tok.lowercase(word)
            words += split(word)
    return words


def _split_where(word: str, is_punctuation) -> list[str]:
    words, start = [], 0
    for i, c in enumerate(word):
        if is_punctuation(c):
            words += [word[start:i], c] if start < i else [c]
            start = i + 1
    return words + ([word[start:]] if start < len(word) else [])


def _keep_controls(text: str) -> str:  # whitespace mapped to " ", but nothing dropped
    return "".join(" " if c in tok._WHITESPACE else c for c in text)


def _only_space(text: str) -> str:  # controls dropped, but tabs, newlines and other spaces left in the words
    return "".join(c for c in text if not tok._is_dropped(c))


_STRIP_HINT = ("strip accents when lower-casing: NFD-decompose (é -> e + U+0301), then drop the non-spacing "
               "marks (category Mn)")


def _nfkd_strip(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word) if unicodedata.category(c) != "Mn")


# Fragments that each exercise one rule; none holds a character whose category changed since
# Unicode 8 (which the tokenizer, as Rust's, reads from Unicode 8 tables) and no capital sigma
# (Rust lower-cases a final Σ to σ, str.lower() to ς).
_FRAGMENTS = ["Héllo", "naïve", "CAFÉ", "Ångström", "straße", "Ελληνικά", "犬と猫", "日本語", "中文字", "don't",
              "U.S.A.", "$5+3^2=14", "`code`", "¿Qué?", "“quoted”", "em—dash", "a…b", "tab\tsep", "line\nbreak",
              "nul\x00byte", "zero\u200bwidth", "ﬁne", "x²", "e\u0301te\u0301", "no\xa0break", "wide\u3000space",
              "50%", "snake_case", "C++", "#tag", "@user", "(paren)", "«guillemets»", "Ωhm", "ÇA", "한국어"]


def _basic_cases() -> list[Case]:
    rng = np.random.default_rng(2)
    cases = [Case("'Hello, World!'", ("Hello, World!",)),
             Case("accents: 'Héllo naïve CAFÉ Ångström'", ("Héllo naïve CAFÉ Ångström",)),
             Case("CJK ideographs: '我爱犬 and 日本語'", ("我爱犬 and 日本語",)),
             Case("Unicode punctuation: '¿Qué? “quoted” em—dash a…b'", ("¿Qué? “quoted” em—dash a…b",)),
             Case("ASCII symbols: '$5+3^2=14 `code` C++'", ("$5+3^2=14 `code` C++",)),
             Case("controls and spaces: 'tab\\tsep nul\\x00byte zero\\u200bwidth no\\xa0break'",
                  ("tab\tsep nul\x00byte zero\u200bwidth no\xa0break",)),
             Case("compatibility characters: 'ﬁne x²'", ("ﬁne x²",))]
    for i in range(6):
        chosen = rng.choice(_FRAGMENTS, size=int(rng.integers(3, 7)), replace=False)
        separators = rng.choice([" ", "  ", "\t", "\n", " \u3000"], size=len(chosen))
        text = "".join(f"{f}{s}" for f, s in zip(chosen, separators))
        cases.append(Case(f"random text {i + 1}: {text!r}", (text,)))
    for i in range(3):
        text = " ".join(rng.choice(_FRAGMENTS, size=5, replace=False))
        cases.append(Case(f"do_lower_case=False: {text!r}", (text, False)))
    return cases


BASIC_TOKENIZE = Exercise(
    number="02", title="BERT's basic tokenisation", file="02_basic_tokenize.py", function="basic_tokenize",
    teaches="text to words before WordPiece: control characters, whitespace, CJK, accents (NFD), lower case, "
            "punctuation",
    docs="tokenizer.md#seven-steps",
    cases=_basic_cases, reference=_basic_tokenize_reference,
    reference_name="minialign's BertTokenizer, steps 2-6 (BertTokenizer._basic_tokenize)",
    outputs=("words",), atol=0.0, rtol=0.0, tolerance="word lists", exact=True,
    mistakes=(
        Mistake("put spaces around every CJK ideograph (the ranges in the docstring) so that each is a word",
                functools.partial(_basic_variant, cjk=lambda t: t)),
        Mistake(_STRIP_HINT, functools.partial(_basic_variant, strip=lambda w: w)),
        Mistake(_STRIP_HINT, functools.partial(_basic_variant, strip=lambda w: unicodedata.normalize("NFD", w))),
        Mistake("decompose with NFD, not NFKD: NFKD also rewrites compatibility characters (ﬁ -> fi, ² -> 2), "
                "which BERT keeps", functools.partial(_basic_variant, strip=_nfkd_strip)),
        Mistake("accents are stripped only when lower-casing (strip_accents=None follows do_lower_case)",
                functools.partial(_basic_variant, strip_always=True)),
        Mistake("punctuation is every Unicode category P* character (¿ “ — …), not only string.punctuation",
                functools.partial(_basic_variant, split=lambda w: _split_where(w, lambda c: c in string.punctuation))),
        Mistake("every ASCII character that is not a letter, digit or space splits like punctuation, symbols "
                "included ($ + ^ ` = are categories S*, not P*)",
                functools.partial(_basic_variant, split=lambda w: _split_where(
                    w, lambda c: unicodedata.category(c).startswith("P")))),
        Mistake("drop NUL, U+FFFD and control/format characters (categories Cc, Cf: U+200B, ...) except "
                "\\t \\n \\r", functools.partial(_basic_variant, clean=_keep_controls, split=lambda w: _split_where(
                    w, lambda c: tok._is_punctuation(c) or (c.isascii() and not (c.isalnum() or c.isspace()))))),
        Mistake("every whitespace character (\\t, \\n, U+00A0, U+3000, ...) separates words, not only ' '",
                functools.partial(_basic_variant, clean=_only_space)),
    ),
)


# -- 03 GELU -------------------------------------------------------------------------------------


def _gelu_cases() -> list[Case]:
    rng = np.random.default_rng(3)
    return [Case("7 values in [-6, 6]", (np.linspace(-6, 6, 7, dtype=F32),)),
            Case("[3, 5, 11] standard normal x 3", ((rng.standard_normal((3, 5, 11)) * 3).astype(F32),)),
            Case("[2, 13] near 0 (|x| < 1e-3)", ((rng.standard_normal((2, 13)) * 1e-3).astype(F32),)),
            Case("[17] large |x| (up to 30)", (np.linspace(-30, 30, 17, dtype=F32),)),
            Case("a 0-d array", (np.asarray(0.5, dtype=F32),))]


def _torch_gelu(x):
    import torch

    return torch.nn.functional.gelu(torch.from_numpy(np.asarray(x, np.float64))).numpy()


GELU = Exercise(
    number="03", title="GELU, exact", file="03_gelu.py", function="gelu",
    teaches="the exact GELU x Phi(x) with erf, and how far the tanh and sigmoid approximations are from it",
    docs="text-tower.md#gelu-exactly-and-how-erf-is-computed",
    cases=_gelu_cases, reference=reference.gelu, reference_name="minialign.backends.reference.gelu",
    outputs=("y",), atol=1e-6, rtol=1e-5,
    tolerance="float32; the reference's erf has a relative error below 1.2e-7",
    mistakes=(
        Mistake("that is the tanh approximation (GPT-2's gelu_new); BERT's 'gelu' is exact: "
                "0.5 x (1 + erf(x / sqrt(2)))", reference.gelu_new),
        Mistake("that is the sigmoid approximation x sigmoid(1.702 x); BERT's 'gelu' is exact: "
                "0.5 x (1 + erf(x / sqrt(2)))", lambda x: x * reference.sigmoid(F32(1.702) * x)),
        Mistake("Phi(x) = (1 + erf(x / sqrt(2))) / 2: the argument of erf is x / sqrt(2), not x",
                lambda x: F32(0.5) * x * (1 + reference.erf(x))),
        Mistake("Phi(x) = (1 + erf(x / sqrt(2))) / 2: the factor 1/2 is missing",
                lambda x: x * (1 + reference.erf(x / F32(math.sqrt(2))))),
    ),
    also=(torch_reference("torch.nn.functional.gelu (float64)", _torch_gelu, 1e-6, 1e-5),),
)


# -- 04 LayerNorm forward --------------------------------------------------------------------------


def _layer_norm_cases() -> list[Case]:
    rng = np.random.default_rng(4)

    def case(name, shape, eps, scale=1.0, shift=0.0, trap=None, tolerance=None):
        H = shape[-1]
        x = (rng.standard_normal(shape) * scale + shift).astype(F32)
        w, b = (1 + 0.5 * rng.standard_normal(H)).astype(F32), rng.standard_normal(H).astype(F32)
        return Case(name, (x, w, b, eps), trap=trap, tolerance=tolerance)

    return [case("[5, 7], eps 1e-5", (5, 7), 1e-5),
            case("[2, 3, 13], eps 0.1", (2, 3, 13), 0.1),
            case("[4, 31] with std 1e-3, eps 1e-5 (eps matters: var ~ 1e-6)", (4, 31), 1e-5, scale=1e-3),
            case("[3, 8] with mean 1000 and std 1, eps 1e-12 (float32 itself is good to ~2e-4 here)", (3, 8),
                 1e-12, shift=1000.0, tolerance=(1e-3, 1e-3),
                 trap="var = mean(x^2) - mean(x)^2 loses every digit in float32 when |mean| >> std: take "
                      "var = mean((x - mean)^2), the mean of squared deviations"),
            case("[6, 1] (H = 1: var is 0)", (6, 1), 1e-5)]


def _layer_norm_variant(x, weight, bias, eps, *, axis=-1, ddof=0, eps_inside=True, affine=True):
    mean = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True, ddof=ddof) if x.shape[axis] > ddof else np.full_like(mean, np.nan)
    y = (x - mean) / (np.sqrt(var + F32(eps)) if eps_inside else np.sqrt(var) + F32(eps))
    return y * weight + bias if affine else y


def _torch_layer_norm(x, weight, bias, eps):
    import torch

    t = [torch.from_numpy(np.asarray(a, np.float64)) for a in (x, weight, bias)]
    return torch.nn.functional.layer_norm(t[0], t[0].shape[-1:], t[1], t[2], eps).numpy()


LAYER_NORM = Exercise(
    number="04", title="LayerNorm forward", file="04_layer_norm.py", function="layer_norm",
    teaches="normalising over the features of each row: biased variance, eps inside the square root, "
            "the affine map",
    docs="text-tower.md#the-encoder-layer-post-norm",
    cases=_layer_norm_cases, reference=reference.layer_norm, reference_name="minialign.backends.reference.layer_norm",
    outputs=("y",), atol=1e-5, rtol=1e-5, tolerance="float32, one reduction over H",
    mistakes=(
        Mistake("eps goes INSIDE the square root: (x - mean) / sqrt(var + eps)",
                functools.partial(_layer_norm_variant, eps_inside=False)),
        Mistake("LayerNorm uses the biased (population) variance, mean((x - mean)^2), divided by H, not H - 1 "
                "(np.var's default ddof=0)", functools.partial(_layer_norm_variant, ddof=1)),
        Mistake("normalise each row over its LAST axis (the H features): mean(axis=-1, keepdims=True)",
                functools.partial(_layer_norm_variant, axis=0)),
        Mistake("after normalising, scale by weight and shift by bias: x_hat * weight + bias",
                functools.partial(_layer_norm_variant, affine=False)),
    ),
    also=(torch_reference("torch.nn.functional.layer_norm (float64)", _torch_layer_norm, 1e-5, 1e-5),),
)


# -- 05 LayerNorm backward -------------------------------------------------------------------------


def _layer_norm_backward_reference(dy, x, weight, eps):
    return backward.layer_norm_backward(dy, (x, weight, eps))


def _layer_norm_backward_cases() -> list[Case]:
    rng = np.random.default_rng(5)

    def case(name, shape, eps, scale=1.0):
        H = shape[-1]
        x = (rng.standard_normal(shape) * scale + rng.standard_normal()).astype(F32)
        w = (1 + 0.5 * rng.standard_normal(H)).astype(F32)
        return Case(name, (rng.standard_normal(shape).astype(F32), x, w, eps))

    return [case("[4, 7], eps 1e-5", (4, 7), 1e-5), case("[2, 3, 13], eps 0.1", (2, 3, 13), 0.1),
            case("[5, 31] with std 0.01, eps 1e-5", (5, 31), 1e-5, scale=0.01), case("[3, 1] (H = 1)", (3, 1), 1e-5)]


def _layer_norm_backward_variant(dy, x, weight, eps, *, mean_path=True, var_path=True, gamma=True, dgamma_x_hat=True,
                                 sum_rows=True):
    mean = x.mean(axis=-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + F32(eps))
    x_hat = (x - mean) * rstd
    g = dy * weight if gamma else dy
    dx = g - (g.mean(axis=-1, keepdims=True) if mean_path else 0)
    dx = rstd * (dx - (x_hat * (g * x_hat).mean(axis=-1, keepdims=True) if var_path else 0))
    dweight = dy * (x_hat if dgamma_x_hat else x)
    rows = (lambda a: a.reshape(-1, a.shape[-1]).sum(axis=0)) if sum_rows else (lambda a: a)
    return dx, rows(dweight), rows(dy)


def _layer_norm_backward_torch(dy, x, weight, eps):
    import torch

    t = [torch.from_numpy(np.asarray(a, np.float64)) for a in (x, weight)]
    b = torch.zeros(weight.shape, dtype=torch.float64)
    for a in (*t, b):
        a.requires_grad_(True)
    out = torch.nn.functional.layer_norm(t[0], t[0].shape[-1:], t[1], b, eps)
    out.backward(torch.from_numpy(np.asarray(dy, np.float64)))
    return t[0].grad.numpy(), t[1].grad.numpy(), b.grad.numpy()


def _layer_norm_backward_numerical(dy, x, weight, eps, h=1e-6):
    """Central differences in float64 of L = sum(dy * layer_norm(x, weight, bias)), through the
    reference forward: dL/dx[i] ~ (L(x + h e_i) - L(x - h e_i)) / 2h, and the same for weight and bias."""
    dy, x, weight = (np.asarray(a, np.float64) for a in (dy, x, weight))
    bias = np.zeros_like(weight)
    args = [x, weight, bias]

    def loss(values):
        return float(np.sum(dy * reference.layer_norm(*values, eps)))

    grads = []
    for k, a in enumerate(args):
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            up, down = [v.copy() for v in args], [v.copy() for v in args]
            up[k][i] += h
            down[k][i] -= h
            g[i] = (loss(up) - loss(down)) / (2 * h)
        grads.append(g)
    return tuple(grads)


LAYER_NORM_BACKWARD = Exercise(
    number="05", title="LayerNorm backward", file="05_layer_norm_backward.py", function="layer_norm_backward",
    teaches="deriving a backward pass by hand (the three paths through the mean and the variance) and checking "
            "it numerically",
    docs="training.md#backward-passes-llmc-style",
    cases=_layer_norm_backward_cases, reference=_layer_norm_backward_reference,
    reference_name="minialign.training.backward.layer_norm_backward",
    outputs=("dx", "dweight", "dbias"), atol=1e-5, rtol=1e-4,
    tolerance="float32; the gradients sum over rows and over H",
    mistakes=(
        Mistake("x also moves the mean: every x_i shifts mean(x) by 1/H, which adds -mean(g) to dx "
                "(g = dy * weight)", functools.partial(_layer_norm_backward_variant, mean_path=False)),
        Mistake("x also moves the variance: d var / d x_i = 2 (x_i - mean) / H, which adds "
                "-x_hat * mean(g * x_hat) to dx (g = dy * weight)",
                functools.partial(_layer_norm_backward_variant, var_path=False)),
        Mistake("dy reaches x_hat through the weight: use g = dy * weight in dx, not dy",
                functools.partial(_layer_norm_backward_variant, gamma=False)),
        Mistake("y = x_hat * weight + bias, so dweight = sum over rows of dy * x_hat (normalised), not dy * x",
                functools.partial(_layer_norm_backward_variant, dgamma_x_hat=False)),
        Mistake("weight and bias are shared by every row: sum their gradients over every leading axis, to "
                "shape [H]", functools.partial(_layer_norm_backward_variant, sum_rows=False)),
    ),
    also=(torch_reference("torch autograd (float64)", _layer_norm_backward_torch, 1e-5, 1e-4),
          Reference("central finite differences of minialign's layer_norm (float64)",
                    _layer_norm_backward_numerical, 1e-4, 1e-3)),
)


# -- 06 masked scaled-dot-product attention --------------------------------------------------------


def _attention_reference(q, k, v, attention_mask):
    return reference.attention(q, k, v, reference.attention_bias(attention_mask))[0]


def _attention_cases() -> list[Case]:
    rng = np.random.default_rng(6)

    def case(name, B, h, T, S, d, real):  # real[b]: how many of the S keys of sequence b are not padding
        q, k, v = (rng.standard_normal((B, h, n, d)).astype(F32) for n in (T, S, S))
        mask = (np.arange(S)[None, :] < np.asarray(real)[:, None]).astype(np.int64)
        return Case(f"B={B}, h={h}, T={T}, S={S}, d={d}; real keys per sequence {list(real)}", (q * 2, k * 2, v, mask))

    return [case("", 2, 3, 5, 7, 4, [7, 3]), case("", 1, 1, 1, 1, 1, [1]), case("", 3, 2, 11, 11, 8, [11, 6, 1]),
            case("", 2, 4, 3, 13, 16, [13, 13])]


def _attention_variant(q, k, v, attention_mask, *, scale="sqrt", axis=-1, masked=True, mask_after=False,
                       mask_queries=False, inverted=False):
    d = q.shape[-1]
    scores = q @ k.transpose(0, 1, 3, 2) / {"sqrt": F32(math.sqrt(d)), "none": F32(1), "d": F32(d)}[scale]
    real = attention_mask != 0 if not inverted else attention_mask == 0
    bias = np.where(real, F32(0), np.finfo(F32).min)
    bias = bias[:, None, :, None] if mask_queries else bias[:, None, None, :]
    if masked and not mask_after:
        scores = scores + bias
    probs = reference.softmax(scores, axis=axis)
    if mask_after:
        probs = probs * real[:, None, None, :]
    return probs @ v


def _torch_attention(q, k, v, attention_mask):
    import torch

    t = [torch.from_numpy(np.asarray(a, np.float64)) for a in (q, k, v)]
    keep = torch.from_numpy(np.asarray(attention_mask) != 0)[:, None, None, :]
    return torch.nn.functional.scaled_dot_product_attention(*t, attn_mask=keep).numpy()


ATTENTION = Exercise(
    number="06", title="masked scaled-dot-product attention", file="06_attention.py", function="attention",
    teaches="softmax(q k^T / sqrt(d) + mask bias) v: the scale, the axis of the softmax, masking padded keys",
    docs="text-tower.md#attention-with-an-additive-mask-bias",
    cases=_attention_cases, reference=_attention_reference,
    reference_name="minialign.backends.reference.attention with reference.attention_bias",
    outputs=("out",), atol=1e-5, rtol=1e-5, tolerance="float32, a softmax over at most 13 keys",
    mistakes=(
        Mistake("divide the scores q k^T by sqrt(d) (d = q.shape[-1]) before the softmax",
                functools.partial(_attention_variant, scale="none")),
        Mistake("the scale is 1 / sqrt(d), not 1 / d", functools.partial(_attention_variant, scale="d")),
        Mistake("the mask is forgotten: add a very negative bias (float32 min) to the scores of padded keys "
                "(mask 0) before the softmax", functools.partial(_attention_variant, masked=False)),
        Mistake("the softmax runs over the KEYS, the last axis of the [B, h, T, S] scores (each query's "
                "weights sum to 1)", functools.partial(_attention_variant, axis=-2)),
        Mistake("mask BEFORE the softmax: zeroing padded weights afterwards leaves the rest summing to less "
                "than 1", functools.partial(_attention_variant, mask_after=True)),
        Mistake("the mask is over the keys (the last axis of the scores: mask[:, None, None, :]), not the queries",
                functools.partial(_attention_variant, mask_queries=True), raises=True),
        Mistake("attention_mask is 1 for a real token and 0 for padding: mask where it is 0",
                functools.partial(_attention_variant, inverted=True)),
    ),
    also=(torch_reference("torch.nn.functional.scaled_dot_product_attention (float64)", _torch_attention,
                           1e-5, 1e-5),),
)


# -- 07 one BERT layer -----------------------------------------------------------------------------

_LAYER_WEIGHTS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                  "intermediate.dense", "output.dense")
_LAYER_NORMS = ("attention.output.LayerNorm", "output.LayerNorm")


def _ops_with(**overrides):
    """The reference backend with some ops replaced (a known mistake, made inside the model)."""
    ops = {name: getattr(reference, name) for name in dir(reference) if not name.startswith("__")}
    return types.SimpleNamespace(**{**ops, **overrides})


def _bert_layer_reference(x, attention_mask, params, num_heads, eps, *, ops=reference, hidden_act="gelu"):
    """AlignTextModel.encoder_layer on the reference ops, with the layer's weights as layer 0."""
    from ..config import AlignTextConfig
    from ..text_model import AlignTextModel

    H, I = x.shape[-1], params["intermediate.dense.weight"].shape[0]
    config = AlignTextConfig(vocab_size=4, hidden_size=H, num_hidden_layers=1, num_attention_heads=num_heads,
                             intermediate_size=I, max_position_embeddings=x.shape[1], layer_norm_eps=eps,
                             hidden_act=hidden_act)
    weights = {name: np.zeros(shape, F32) for name, shape in AlignTextModel.expected_shapes(config).items()}
    weights.update({f"encoder.layer.0.{name}": value for name, value in params.items()})
    return AlignTextModel(config, weights, ops=ops).encoder_layer(0, x, attention_mask)[0]


def _without_residual(which: int | None):
    """The layer with the residual of sublayer ``which`` left out (0: attention, 1: feed-forward, None: both)."""

    def variant(*args):
        calls = itertools.count()

        def add_layer_norm(x, residual, weight, bias, eps):
            dropped = which is None or next(calls) == which
            return reference.layer_norm(x if dropped else x + residual, weight, bias, eps)

        def linear_add_layer_norm(x, weight, bias, residual, norm_weight, norm_bias, eps):
            return add_layer_norm(reference.linear(x, weight, bias), residual, norm_weight, norm_bias, eps)

        return _bert_layer_reference(*args, ops=_ops_with(add_layer_norm=add_layer_norm,
                                                          linear_add_layer_norm=linear_add_layer_norm))

    return variant


def _heads_by_reshape(q, k, v, attention_mask, num_heads, *, return_probs=False):
    B, T, H = q.shape

    def split(y):  # the mistake: [B, T, H] read as [B, heads, T, d] without moving the heads axis
        return y.reshape(B, num_heads, T, H // num_heads)

    context, _ = reference.attention(split(q), split(k), split(v), reference.attention_bias(attention_mask))
    return context.reshape(B, T, H), None


def _pre_norm_layer(x, attention_mask, params, num_heads, eps):
    p = params

    def lin(name, y, act=None):
        return reference.linear(y, p[name + ".weight"], p[name + ".bias"], act)

    def norm(name, y):
        return reference.layer_norm(y, p[name + ".weight"], p[name + ".bias"], eps)

    h = norm("attention.output.LayerNorm", x)
    q, k, v = (lin(f"attention.self.{n}", h) for n in ("query", "key", "value"))
    context, _ = reference.multi_head_attention(q, k, v, attention_mask, num_heads)
    a = x + lin("attention.output.dense", context)
    return a + lin("output.dense", lin("intermediate.dense", norm("output.LayerNorm", a), "gelu"))


def _bert_layer_cases() -> list[Case]:
    rng = np.random.default_rng(7)

    def case(B, T, H, heads, I, real, eps=1e-12):
        params = {}
        for name in _LAYER_WEIGHTS:
            out, inp = {"intermediate.dense": (I, H), "output.dense": (H, I)}.get(name, (H, H))
            params[name + ".weight"] = (rng.standard_normal((out, inp)) / math.sqrt(inp)).astype(F32)
            params[name + ".bias"] = (0.1 * rng.standard_normal(out)).astype(F32)
        for name in _LAYER_NORMS:
            params[name + ".weight"] = (1 + 0.2 * rng.standard_normal(H)).astype(F32)
            params[name + ".bias"] = (0.1 * rng.standard_normal(H)).astype(F32)
        x = rng.standard_normal((B, T, H)).astype(F32)
        mask = (np.arange(T)[None, :] < np.asarray(real)[:, None]).astype(np.int64)
        return Case(f"B={B}, T={T}, H={H} = {heads} heads x {H // heads}, I={I}; real tokens {list(real)}",
                    (x, mask, params, heads, eps))

    return [case(2, 5, 12, 3, 20, [5, 2]), case(1, 7, 8, 2, 13, [7]), case(3, 4, 6, 1, 10, [4, 1, 3])]


BERT_LAYER = Exercise(
    number="07", title="one BERT layer", file="07_bert_layer.py", function="bert_layer",
    teaches="a post-norm transformer layer from the ops: heads split and merged, residuals, LayerNorm after "
            "each sublayer, exact GELU",
    docs="text-tower.md#the-encoder-layer-post-norm",
    cases=_bert_layer_cases, reference=_bert_layer_reference,
    reference_name="minialign.text_model.AlignTextModel.encoder_layer on the reference ops",
    outputs=("out",), atol=1e-4, rtol=1e-4, tolerance="float32 through two matrix products, attention and two "
                                                       "LayerNorms",
    mistakes=(
        Mistake("BERT is POST-norm: a = LayerNorm(x + attention(x)), out = LayerNorm(a + ffn(a)); the "
                "LayerNorm comes after each residual add, not before the sublayer", _pre_norm_layer),
        *(Mistake("each sublayer's output is added to its input before the LayerNorm: LayerNorm(x + attention(x)) "
                  "and LayerNorm(a + ffn(a))", _without_residual(which)) for which in (0, 1, None)),
        Mistake("split the heads as y.reshape(B, T, heads, d).transpose(0, 2, 1, 3): a plain reshape to "
                "[B, heads, T, d] mixes tokens", lambda *a: _bert_layer_reference(*a, ops=_ops_with(
                    multi_head_attention=_heads_by_reshape))),
        Mistake("BERT's activation is the exact GELU (erf), not the tanh approximation",
                lambda *a: _bert_layer_reference(*a, hidden_act="gelu_new")),
        Mistake("the attention mask is forgotten: padded keys must get a very negative bias before the softmax",
                lambda x, mask, *rest: _bert_layer_reference(x, np.ones_like(mask), *rest)),
    ),
)

EXERCISES = (WORDPIECE, BASIC_TOKENIZE, GELU, LAYER_NORM, LAYER_NORM_BACKWARD, ATTENTION, BERT_LAYER)
