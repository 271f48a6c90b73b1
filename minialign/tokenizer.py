"""BERT's WordPiece tokenizer in plain Python: the same ids as transformers' ``BertTokenizer``.

ALIGN's text tower is BERT, so its tokenizer is BERT's: a ``vocab.txt`` (one token per line, the
line number is the id) and a ``tokenizer_config.json``. A caption becomes ids in seven steps, in
the order transformers 5 runs them (its ``BertTokenizer`` is the Rust ``tokenizers`` pipeline
BertNormalizer -> BertPreTokenizer -> WordPiece -> TemplateProcessing):

    "Ein Hund, 犬! [MASK]"
     1. special tokens    split out [CLS] [SEP] [PAD] [UNK] [MASK], matched verbatim:
                          "Ein Hund, 犬! " | [MASK]
     2. clean             drop NUL, U+FFFD and control/format chars; any whitespace -> " "
     3. CJK               put spaces around every CJK ideograph:       "Ein Hund,  犬 ! "
     4. strip accents     NFD, then drop non-spacing marks (é -> e)     (if strip_accents)
     5. lowercase         character by character                       (if do_lower_case)
     6. pre-tokenize      split on whitespace, isolate each punctuation char:
                          ein | hund | , | 犬 | !
     7. WordPiece         greedy longest-match-first against the vocab; later pieces carry "##";
                          a word that cannot be covered, or has > 100 chars, is [UNK]:
                          ein | hu ##nd | , | 犬 | !
     then                 [CLS] ... [SEP], truncation, padding -> input_ids, token_type_ids,
                          attention_mask

``strip_accents=None`` (the default) means "strip when lower-casing", as in the original BERT.

Where the Rust pipeline (what transformers 5 runs) and transformers' pure-Python reference
(``tokenization_bert_legacy.BasicTokenizer``, what transformers 4's slow tokenizer ran) disagree,
this module follows Rust:

- Legacy NFC-normalises the whole text first; Rust does not. It shows when accents are kept
  (``strip_accents=False``, e.g. a cased vocab): "e" + U+0301 stays two characters here.
- Legacy lower-cases with ``str.lower()``, which turns a word-final Σ into ς; Rust lower-cases
  one character at a time, so "ΟΔΟΣ" -> "οδοσ".
- Legacy strips accents after lower-casing, Rust before (no known input where this matters).
- Rust's CJK ranges have 0x2B920-0x2CEAF where legacy has 0x2B820-0x2CEAF.
- Rust's character classes come from Unicode 8.0 tables (the ``unicode_categories`` crate): a
  control, punctuation or accent character added since is an ordinary character to it (kept,
  not split, not stripped), four characters keep their 8.0 category, and an unassigned code
  point (Cn) is kept. Legacy uses Python's current ``unicodedata``, and drops Cn. Rust's NFD
  tables are older than Unicode 13 too (it leaves U+11938 whole). ``_category`` and
  ``strip_accents`` below reproduce Rust's view; the tests check every code point.
- ``never_split`` in tokenizer_config.json is ignored by transformers 5 (Rust has no such
  option); legacy honours it. We honour it, with legacy's meaning: a whitespace-separated word
  (after cleaning) that is in ``never_split`` is neither lower-cased nor split. With the usual
  ``never_split: null`` nothing changes.

Only single sentences are encoded (``token_type_ids`` are all 0); a sentence pair raises
NotImplementedError. ALIGN embeds one caption at a time.
"""

from __future__ import annotations

import bisect
import functools
import json
import os
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np
import regex

from .jsonfile import read_json_object
from .validation import is_int

VOCAB_NAME = "vocab.txt"
# What transformers 5 saves instead of vocab.txt: the tokenizers pipeline, the vocabulary in it.
TOKENIZER_JSON_NAME = "tokenizer.json"
CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_NAME = "special_tokens_map.json"

# transformers' stand-in for "no model_max_length" (``VERY_LARGE_INTEGER``); like transformers,
# any model_max_length above ``LARGE_INTEGER`` = 1e20 counts as "none".
NO_MAX_LENGTH = int(1e30)
_LARGE_INTEGER = int(1e20)
# How many distinct whitespace-separated chunks of raw text keep their ids in the per-instance
# cache. English captions use a few thousand distinct words, so the cache almost always hits.
CHUNK_CACHE_SIZE = 2**16

PADDING_STRATEGIES = (False, True, "longest", "max_length", "do_not_pad")


# --------------------------------------------------------------------------------------------
# Character classes, as the Rust pipeline defines them
# --------------------------------------------------------------------------------------------

# Rust's ``char::is_whitespace``: the Unicode White_Space property (category Zs plus these
# controls and separators). \x0b, \x0c and \x85 are also control characters, and cleaning drops
# control characters before it maps whitespace, so they disappear rather than split words.
_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# Every ASCII character that is neither a letter, a digit, a space nor a control: "$", "+",
# "^", "`" ... are symbols to Unicode, but BERT splits them like punctuation.
_ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_ASCII_WORDS = regex.compile(r"[^!-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]")  # ranges: exactly the 32 above

# "Chinese characters": the CJK Unified Ideographs blocks and their compatibility blocks. Hangul,
# hiragana and katakana are not here: those scripts put spaces between words.
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),  # Rust's start; legacy's BasicTokenizer starts at 0x2B820
    (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)
_CJK = regex.compile("[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _CJK_RANGES) + "]")

# Canonical decompositions newer than Rust's normalisation tables (Unicode 12 or older): Rust
# leaves these characters whole under NFD. (Python 3.14's Unicode 16 adds more; the code-point
# test in tests/test_tokenizer.py names them.)
_NEW_DECOMPOSITIONS = regex.compile("(\U00011938)")  # DIVES AKURU VOWEL SIGN O (Unicode 13)


@functools.lru_cache(maxsize=2**14)  # more distinct characters than most corpora use
def _category(char: str) -> str:
    """``unicodedata.category`` as tokenizers' Unicode 8.0 tables see it.

    Two kinds of difference with the running Python's Unicode database matter to a tokenizer
    (only control/format, punctuation and non-spacing-mark categories are ever asked about):
    characters assigned after Unicode 8.0 with one of those categories are unassigned (Cn) to
    Rust, and four characters changed category since.
    """
    cp = ord(char)
    if cp in _RECATEGORISED_SINCE_UNICODE_8:
        return _RECATEGORISED_SINCE_UNICODE_8[cp]
    i = bisect.bisect_right(_NEWER_THAN_UNICODE_8_STARTS, cp) - 1
    if i >= 0 and cp <= _NEWER_THAN_UNICODE_8[i][1]:
        return "Cn"
    return unicodedata.category(char)


def _is_dropped(char: str) -> bool:
    """NUL, U+FFFD and control characters (Cc, Cf, Co, Cs; \\t \\n \\r excepted) are removed.

    Unassigned code points (Cn) are "other" characters too but are kept: Rust's ``is_other``
    leaves them out. Legacy BERT drops them.
    """
    if char in "\t\n\r":
        return False
    return char == "\x00" or char == "\ufffd" or _category(char) in ("Cc", "Cf", "Co", "Cs")


def _is_punctuation(char: str) -> bool:
    return char in _ASCII_PUNCTUATION or _category(char).startswith("P")


def _is_nonspacing_mark(char: str) -> bool:
    return _category(char) == "Mn"


# --------------------------------------------------------------------------------------------
# Steps 2-7, each a function of a string
# --------------------------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """Step 2: drop NUL/U+FFFD/control characters, turn every whitespace character into " "."""
    if text.isascii() and text.isprintable():  # printable ASCII: no controls, " " the only space
        return text
    return "".join(" " if c in _WHITESPACE else c for c in text if not _is_dropped(c))


def space_cjk(text: str) -> str:
    """Step 3: " 犬 " for every CJK ideograph, so that each becomes a word of its own."""
    if text.isascii():
        return text
    return _CJK.sub(lambda m: f" {m.group()} ", text)


def strip_accents(word: str) -> str:
    """Step 4: canonical decomposition (NFD: "é" -> "e" + U+0301), then drop the marks (Mn)."""
    if word.isascii():  # nothing to decompose, no marks
        return word
    # NFD, except for the few characters Rust cannot decompose (they are starters, so splitting
    # around them does not change how the rest is decomposed and reordered).
    parts = _NEW_DECOMPOSITIONS.split(word)
    decomposed = "".join(p if i % 2 else unicodedata.normalize("NFD", p) for i, p in enumerate(parts))
    return "".join(c for c in decomposed if not _is_nonspacing_mark(c))


def lowercase(word: str) -> str:
    """Step 5: lower-case one character at a time, as Rust's ``char::to_lowercase`` does.

    ``str.lower()`` is per character except for one context rule, a word-final capital sigma
    ("ΟΔΟΣ".lower() == "οδος"); Rust has no context rules ("οδοσ"), so a Σ goes one by one.
    """
    if "Σ" not in word:
        return word.lower()
    return "".join(c.lower() for c in word)


def split_punctuation(word: str) -> list[str]:
    """Step 6 (second half): every punctuation character becomes a word of its own.

    "hund," -> ["hund", ","];  "a...b" -> ["a", ".", ".", ".", "b"]
    """
    if word.isascii():  # the same split by one regex: runs of non-punctuation, or one punctuation char
        return _ASCII_WORDS.findall(word)
    words: list[str] = []
    start = 0
    for i, c in enumerate(word):
        if _is_punctuation(c):
            if start < i:
                words.append(word[start:i])
            words.append(c)
            start = i + 1
    if start < len(word):
        words.append(word[start:])
    return words


def wordpiece(word: str, vocab: dict[str, int], unk_token: str, max_chars: int = 100,
              max_piece_chars: int | None = None) -> list[str]:
    """Step 7: greedy longest-match-first WordPiece.

    From the start of the word take the longest prefix that is in the vocab, then from where it
    ended the longest "##"-prefixed continuation, and so on. If some position has no match at
    all, or the word is longer than ``max_chars`` characters, the whole word is one ``unk_token``.

    "unaffable" -> ["un", "##aff", "##able"] with a vocab holding those three pieces.
    ``max_piece_chars`` (the longest vocab entry, in characters) only bounds the search.
    """
    if len(word) > max_chars:
        return [unk_token]
    longest = max_piece_chars or len(word)
    pieces = []
    start = 0
    while start < len(word):
        for end in range(min(len(word), start + longest), start, -1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
        else:
            return [unk_token]
        pieces.append(piece)
        start = end
    return pieces


# Steps 2-3 never join characters across a space and steps 4-7 work inside a word, so a text's
# tokens are the concatenation of the tokens of its " "-separated chunks: that is what makes the
# per-chunk cache in ``BertTokenizer`` exact.


# --------------------------------------------------------------------------------------------
# Reading vocab.txt and tokenizer_config.json
# --------------------------------------------------------------------------------------------


def load_vocab(path: str | os.PathLike) -> dict[str, int]:
    """``vocab.txt`` -> {token: id}, id = line number (from 0); or a ``tokenizer.json``'s.

    Read as the Rust ``WordPiece.read_file`` does (what transformers 5 uses): lines end at "\\n"
    only and trailing whitespace is trimmed, so "ab \\r\\n" is "ab"; a lone "\\r" inside a line is
    kept. A token listed twice keeps its last line number.
    """
    if os.fspath(path).endswith(".json"):
        return _tokenizer_json_vocab(path)
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":  # the newline that ends the file does not start a token
        lines.pop()
    return {line.rstrip("".join(_WHITESPACE)): i for i, line in enumerate(lines)}


def _tokenizer_json_vocab(path: str | os.PathLike) -> dict[str, int]:
    """The {token: id} vocabulary of a tokenizers ``tokenizer.json`` holding a WordPiece model (what
    transformers 5 writes for a BERT tokenizer instead of vocab.txt). A file for another model, with
    another continuation prefix than "##", or with added tokens outside the vocabulary (which
    the text would have to be split on) is a ValueError naming the file and the reason."""
    data = read_json_object(path, error=ValueError)
    model = data.get("model")
    kind = model.get("type") if isinstance(model, dict) else None
    if kind != "WordPiece" or not isinstance(model.get("vocab"), dict):
        raise ValueError(f"{os.fspath(path)}: model type {kind!r}; BertTokenizer reads WordPiece vocabularies only")
    if model.get("continuing_subword_prefix", "##") != "##":
        raise ValueError(f"{os.fspath(path)}: continuing_subword_prefix {model['continuing_subword_prefix']!r}; "
                         "BertTokenizer's word pieces continue with '##'")
    vocab = model["vocab"]
    if not all(isinstance(k, str) and is_int(v) for k, v in vocab.items()) or \
            sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(f"{os.fspath(path)}: model.vocab must map tokens to the ids 0 .. {len(vocab) - 1}, "
                         "each once (the line numbers of a vocab.txt)")
    extra = [t.get("content") for t in data.get("added_tokens") or [] if isinstance(t, dict)
             and t.get("content") not in vocab]
    if extra:
        raise ValueError(f"{os.fspath(path)}: added tokens {extra} are not in the vocabulary; minialign's "
                         "BertTokenizer has no added tokens beyond the vocabulary's special tokens")
    return {token: int(i) for token, i in vocab.items()}


def _token_content(value) -> str | None:
    """A special token as configs write it: "[UNK]" or an AddedToken dict {"content": "[UNK]"}."""
    if isinstance(value, dict):
        value = value.get("content")
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"a special token must be a string or a dict with 'content', got {value!r}")


class BatchEncoding(dict):
    """``{"input_ids", "token_type_ids", "attention_mask"}``, also readable as attributes."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# --------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------


class BertTokenizer:
    """BERT's WordPiece tokenizer with transformers' interface (see the module docstring).

    Args:
        vocab_file: path of a ``vocab.txt`` (or of a ``tokenizer.json`` with a WordPiece model).
            It must hold ``unk_token``, ``sep_token``,
            ``pad_token`` and ``cls_token``; ``mask_token`` is special only when present.
        do_lower_case: lower-case the text (step 5).
        strip_accents: strip accents (step 4); ``None`` follows ``do_lower_case``.
        tokenize_chinese_chars: make every CJK ideograph a word (step 3).
        never_split: words kept whole and as written (see the module docstring).
        model_max_length: the length ``truncation=True`` and ``padding="max_length"`` use when
            no ``max_length`` is given; ``None`` means none (transformers' ``int(1e30)``).
        clean_up_tokenization_spaces: ``decode`` also removes spaces before punctuation and
            contractions across the whole string (transformers 5 default: False).
    """

    def __init__(
        self,
        vocab_file: str | os.PathLike,
        do_lower_case: bool = True,
        *,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        never_split: Iterable[str] | None = None,
        unk_token: str = "[UNK]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        cls_token: str = "[CLS]",
        mask_token: str = "[MASK]",
        model_max_length: int | None = None,
        clean_up_tokenization_spaces: bool = False,
        max_input_chars_per_word: int = 100,
    ):
        if not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"BertTokenizer: no vocabulary file at {os.fspath(vocab_file)!r}")
        self.vocab_file = os.fspath(vocab_file)
        self.vocab = load_vocab(vocab_file)
        self.ids_to_tokens = {i: token for token, i in self.vocab.items()}

        self.do_lower_case = bool(do_lower_case)
        self.strip_accents = self.do_lower_case if strip_accents is None else bool(strip_accents)
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.never_split = frozenset(never_split or ())
        self.max_input_chars_per_word = max_input_chars_per_word
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        if model_max_length is None or (isinstance(model_max_length, float) and model_max_length > _LARGE_INTEGER):
            model_max_length = NO_MAX_LENGTH  # configs also write "no limit" as 1e30, a JSON float
        if isinstance(model_max_length, bool) or not isinstance(model_max_length, int) or model_max_length < 2:
            raise ValueError(f"model_max_length must be an int >= 2 (or None), got {model_max_length!r}")
        self.model_max_length = model_max_length

        self.unk_token, self.sep_token, self.pad_token = unk_token, sep_token, pad_token
        self.cls_token, self.mask_token = cls_token, mask_token
        required = {"unk_token": unk_token, "sep_token": sep_token, "pad_token": pad_token, "cls_token": cls_token}
        missing = [f"{name}={token!r}" for name, token in required.items() if token not in self.vocab]
        if missing:
            raise ValueError(f"BertTokenizer: the vocabulary {self.vocab_file!r} lacks {', '.join(missing)}")
        self.unk_token_id = self.vocab[unk_token]
        self.sep_token_id = self.vocab[sep_token]
        self.pad_token_id = self.vocab[pad_token]
        self.cls_token_id = self.vocab[cls_token]
        self.mask_token_id = self.vocab.get(mask_token)

        # Step 1. Special tokens are found in the raw text, before any normalisation, longest
        # first where two could start at the same place.
        specials = [unk_token, sep_token, pad_token, cls_token, mask_token]
        self.all_special_tokens = [t for t in dict.fromkeys(specials) if t and t in self.vocab]
        self.all_special_ids = [self.vocab[t] for t in self.all_special_tokens]
        alternatives = sorted(self.all_special_tokens, key=len, reverse=True)
        self._special_pattern = regex.compile("|".join(regex.escape(t) for t in alternatives))

        self._max_piece_chars = max(len(t[2:]) if t.startswith("##") else len(t) for t in self.vocab)
        self._encode_chunk = functools.lru_cache(maxsize=CHUNK_CACHE_SIZE)(self._encode_chunk_uncached)

    # ---- loading ----------------------------------------------------------------------------

    # What from_pretrained's keyword arguments may set: the constructor's options.
    OPTION_NAMES = ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "never_split", "unk_token",
                    "sep_token", "pad_token", "cls_token", "mask_token", "model_max_length",
                    "clean_up_tokenization_spaces", "max_input_chars_per_word")
    model_input_names = ("input_ids", "token_type_ids", "attention_mask")  # what __call__ returns, in order

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides) -> BertTokenizer:
        """Load ``directory/vocab.txt`` (else the vocabulary in ``tokenizer.json``, which is what
        transformers 5 saves) with the options in ``tokenizer_config.json``.

        Honoured keys: do_lower_case, strip_accents, tokenize_chinese_chars, never_split,
        model_max_length, clean_up_tokenization_spaces and the special tokens (also read from
        ``special_tokens_map.json`` when present, as transformers does). Other keys are ignored.
        Keyword arguments (``OPTION_NAMES``) override the files, as in transformers; any other
        keyword is a ValueError naming it.
        """
        from .hub import resolve_model_dir  # a directory, a shipped model's name, or a cached hub id

        unknown = sorted(set(overrides) - set(cls.OPTION_NAMES))
        if unknown:
            raise ValueError(f"BertTokenizer.from_pretrained: unknown option(s) {unknown}; "
                             f"the options are {list(cls.OPTION_NAMES)}")
        directory = resolve_model_dir(directory)
        vocab_file = os.path.join(directory, VOCAB_NAME)
        if not os.path.isfile(vocab_file) and os.path.isfile(os.path.join(directory, TOKENIZER_JSON_NAME)):
            vocab_file = os.path.join(directory, TOKENIZER_JSON_NAME)
        if not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"BertTokenizer.from_pretrained: no {VOCAB_NAME} (or {TOKENIZER_JSON_NAME}) "
                                    f"in {directory!r}")

        config: dict = {}
        for name in (SPECIAL_TOKENS_MAP_NAME, CONFIG_NAME):  # the later file wins
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                config.update(read_json_object(path, error=ValueError))

        kwargs = {}
        for key in ("do_lower_case", "strip_accents", "tokenize_chinese_chars", "never_split",
                    "model_max_length", "clean_up_tokenization_spaces"):
            if config.get(key) is not None:
                kwargs[key] = config[key]
        for key in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
            if config.get(key) is not None:
                kwargs[key] = _token_content(config[key])
        kwargs.update(overrides)
        return cls(vocab_file, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``vocab.txt`` (one token per line, in id order) and ``tokenizer_config.json``
        with the options ``from_pretrained`` reads, in the keys transformers uses."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, VOCAB_NAME), "w", encoding="utf-8") as f:
            f.writelines(token + "\n" for token, _ in sorted(self.vocab.items(), key=lambda kv: kv[1]))
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.do_lower_case,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "never_split": sorted(self.never_split) or None,
            "model_max_length": self.model_max_length if self.model_max_length != NO_MAX_LENGTH else None,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "unk_token": self.unk_token, "sep_token": self.sep_token, "pad_token": self.pad_token,
            "cls_token": self.cls_token, "mask_token": self.mask_token,
        }
        with open(os.path.join(directory, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump({k: v for k, v in config.items() if v is not None}, f, indent=2)
            f.write("\n")

    # ---- vocabulary -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Token(s) -> id(s); a token not in the vocab gives ``unk_token``'s id."""
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.unk_token_id)
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False):
        """Id(s) -> token(s); an id outside the vocab gives None (as in transformers 5)."""
        if is_int(ids):
            return self.ids_to_tokens.get(int(ids))
        tokens = [self.ids_to_tokens.get(int(i)) for i in _check_ids(ids)]
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in self.all_special_tokens]
        return tokens

    # ---- text -> tokens ---------------------------------------------------------------------

    def _basic_tokenize(self, text: str) -> list[str]:
        """Steps 2-6 on text without special tokens: words and punctuation, ready for WordPiece."""
        text = clean_text(text)
        if self.tokenize_chinese_chars:
            text = space_cjk(text)
        words = []
        for word in text.split(" "):  # after cleaning every whitespace character is " "
            if not word:
                continue
            if word in self.never_split:
                words.append(word)
                continue
            if self.strip_accents:
                word = strip_accents(word)
            if self.do_lower_case:
                word = lowercase(word)
            words.extend(split_punctuation(word))
        return words

    def _encode_chunk_uncached(self, chunk: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """Steps 2-7 on one " "-free chunk of raw text -> (tokens, ids). Cached per instance."""
        tokens = []
        for word in self._basic_tokenize(chunk):
            if word in self.never_split:
                tokens.append(word)
            else:
                tokens += wordpiece(word, self.vocab, self.unk_token, self.max_input_chars_per_word,
                                    self._max_piece_chars)
        return tuple(tokens), tuple(self.vocab.get(t, self.unk_token_id) for t in tokens)

    def _pieces(self, text: str):
        """Step 1: yield (piece, is_special) with the special tokens cut out of the raw text."""
        start = 0
        for match in self._special_pattern.finditer(text):
            if match.start() > start:
                yield text[start:match.start()], False
            yield match.group(), True
            start = match.end()
        if start < len(text):
            yield text[start:], False

    def _tokens_and_ids(self, text: str) -> tuple[list[str], list[int]]:
        tokens: list[str] = []
        ids: list[int] = []
        for piece, is_special in self._pieces(text):
            if is_special:
                tokens.append(piece)
                ids.append(self.vocab[piece])
                continue
            for chunk in piece.split(" "):
                if chunk:
                    chunk_tokens, chunk_ids = self._encode_chunk(chunk)
                    tokens += chunk_tokens
                    ids += chunk_ids
        return tokens, ids

    def tokenize(self, text: str) -> list[str]:
        """Word pieces of ``text``, without [CLS]/[SEP]: ``"unaffable!"`` -> ``["un", "##aff", "##able", "!"]``."""
        _check_text(text)
        return self._tokens_and_ids(text)[0]

    def _encode_ids(self, text: str) -> list[int]:
        """Word-piece ids of ``text`` (no special tokens added). The hot path of ``__call__``."""
        if self._special_pattern.search(text) is None:  # the usual case: one piece, no specials
            ids: list[int] = []
            for chunk in text.split(" "):
                if chunk:
                    ids += self._encode_chunk(chunk)[1]
            return ids
        return self._tokens_and_ids(text)[1]

    # ---- encoding ---------------------------------------------------------------------------

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair=None,
        *,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
    ) -> BatchEncoding:
        """Encode a caption or a batch of captions as ``[CLS] pieces [SEP]``.

        Args:
            text: a string, or a list/tuple of strings (a batch).
            padding: False / "do_not_pad"; True / "longest" (pad to the longest in the batch);
                "max_length" (pad to ``max_length``, else ``model_max_length``). Padding is
                ``pad_token`` on the right with ``attention_mask`` 0.
            truncation: True keeps the first ``max_length - 2`` pieces (then adds [CLS], [SEP]).
                ``None`` (default) means True when ``max_length`` is given and ``padding`` is
                False, else False (transformers' rule).
            max_length: the length to truncate and/or pad to, special tokens included.
            return_tensors: None gives lists (flat for one string, nested for a batch); "np"
                gives int64 arrays of shape [B, T] ([1, T] for one string).

        Returns:
            ``BatchEncoding`` with ``input_ids``, ``token_type_ids`` (all 0), ``attention_mask``.
        """
        if text_pair is not None:
            raise NotImplementedError("BertTokenizer: sentence pairs are not supported; ALIGN encodes "
                                      "one caption per sequence (pass text only)")
        is_batch = not isinstance(text, str)
        if is_batch:
            if not isinstance(text, (list, tuple)):
                raise TypeError(f"BertTokenizer: text must be a str or a list of str, got {type(text).__name__}")
            for i, t in enumerate(text):
                if not isinstance(t, str):
                    raise TypeError(f"BertTokenizer: text[{i}] must be a str, got {type(t).__name__} ({t!r:.50})")
        texts = list(text) if is_batch else [text]
        pad_to, truncate_to = self._lengths(padding, truncation, max_length)
        if return_tensors not in (None, "np"):
            raise ValueError(f"BertTokenizer: return_tensors must be None or 'np' (NumPy), got {return_tensors!r}")

        input_ids = []
        for t in texts:
            ids = self._encode_ids(t)
            if truncate_to is not None:
                ids = ids[: truncate_to - 2]
            input_ids.append([self.cls_token_id, *ids, self.sep_token_id])

        if pad_to == "longest":
            pad_to = max((len(ids) for ids in input_ids), default=0)
        attention_mask = [[1] * len(ids) for ids in input_ids]
        if pad_to is not None:
            for ids, mask in zip(input_ids, attention_mask):
                n = max(pad_to - len(ids), 0)
                ids += [self.pad_token_id] * n
                mask += [0] * n
        token_type_ids = [[0] * len(ids) for ids in input_ids]

        out = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
        if return_tensors == "np":
            lengths = {len(ids) for ids in input_ids}
            if len(lengths) > 1:
                raise ValueError(f"BertTokenizer: return_tensors='np' needs equal lengths, got lengths "
                                 f"{sorted(lengths)}; pass padding=True (or 'max_length')")
            width = lengths.pop() if lengths else 0
            return BatchEncoding({k: np.array(v, dtype=np.int64).reshape(len(v), width) for k, v in out.items()})
        if not is_batch:
            out = {k: v[0] for k, v in out.items()}
        return BatchEncoding(out)

    def _lengths(self, padding, truncation, max_length) -> tuple[int | str | None, int | None]:
        """Check the padding/truncation options -> (pad to: None | "longest" | n, truncate to: None | n)."""
        if not (isinstance(padding, bool) or padding in ("longest", "max_length", "do_not_pad")):
            raise ValueError(f"BertTokenizer: padding must be one of {PADDING_STRATEGIES}, got {padding!r}")
        truncation = {"longest_first": True, "only_first": True, "do_not_truncate": False}.get(truncation, truncation)
        if not (truncation is None or isinstance(truncation, bool)):
            raise ValueError("BertTokenizer: truncation must be True, False, None, 'longest_first', 'only_first' "
                             f"or 'do_not_truncate', got {truncation!r}")
        if max_length is not None and (not is_int(max_length) or max_length < 1):
            raise ValueError(f"BertTokenizer: max_length must be a positive int, got {max_length!r}")
        if truncation is None:  # transformers: max_length alone (no padding) turns truncation on
            truncation = max_length is not None and padding is False

        truncate_to = None
        if truncation:
            truncate_to = max_length if max_length is not None else self.model_max_length
            if truncate_to < 2:
                raise ValueError(f"BertTokenizer: max_length={truncate_to} with truncation leaves no room for "
                                 f"the 2 special tokens [CLS] and [SEP]; use max_length >= 2")
            if truncate_to > _LARGE_INTEGER:
                truncate_to = None

        pad_to = None
        if padding in (True, "longest"):
            pad_to = "longest"
        elif padding == "max_length":
            pad_to = max_length if max_length is not None else self.model_max_length
            if pad_to > _LARGE_INTEGER:
                raise ValueError("BertTokenizer: padding='max_length' needs max_length=..., and this tokenizer "
                                 "has no model_max_length to fall back on")
        return pad_to, truncate_to

    # ---- ids -> text ------------------------------------------------------------------------

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        """Ids -> text, as transformers 5 (the Rust WordPiece decoder) writes it.

        Pieces are joined with spaces, a "##" piece glued to the one before (a first piece keeps
        its "##"); then, piece by piece, " ." " ?" " !" " ," lose their space (and a few
        contractions are rejoined). Ids outside the vocab are skipped; with
        ``skip_special_tokens`` so are [CLS] [SEP] [PAD] [UNK] [MASK]. With
        ``clean_up_tokenization_spaces`` (default: the tokenizer's setting, False unless the
        config says otherwise) transformers' cleanup is applied to the whole string as well.
        """
        tokens = [t for t in self.convert_ids_to_tokens([ids] if is_int(ids) else ids,
                                                        skip_special_tokens=skip_special_tokens)
                  if t is not None]
        parts = []
        for i, token in enumerate(tokens):
            if i > 0:
                token = token[2:] if token.startswith("##") else " " + token
            parts.append(_replace_all(token, _DECODER_CLEANUP))
        text = "".join(parts)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:
            text = _replace_all(text, _TRANSFORMERS_CLEANUP)
        return text

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        """``decode`` for each row of a list of id lists or a [B, T] array."""
        return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in sequences]

    def __repr__(self) -> str:
        return (f"BertTokenizer(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
                f"strip_accents={self.strip_accents}, model_max_length={self.model_max_length})")


# The Rust WordPiece decoder's ``cleanup`` (applied to each piece after its space is added) and
# transformers' ``clean_up_tokenization`` (applied to the whole string when asked): the same
# list, except that only the decoder knows " do not" -> " don't".
_TRANSFORMERS_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
_DECODER_CLEANUP = _TRANSFORMERS_CLEANUP[:7] + ((" do not", " don't"),) + _TRANSFORMERS_CLEANUP[7:]


def _replace_all(text: str, replacements) -> str:
    for old, new in replacements:
        text = text.replace(old, new)
    return text


def _check_ids(ids) -> list[int]:
    if isinstance(ids, np.ndarray) and ids.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of ids, got an array of shape {ids.shape}; "
                         "use batch_decode for a batch")
    ids = list(ids)
    for i in ids:
        if not is_int(i):
            raise TypeError(f"token ids must be ints, got {type(i).__name__} ({i!r:.50})"
                            + ("; use batch_decode for a batch" if isinstance(i, (list, tuple, np.ndarray)) else ""))
    return ids


def _check_text(text) -> None:
    if not isinstance(text, str):
        raise TypeError(f"BertTokenizer: text must be a str, got {type(text).__name__}")


# --------------------------------------------------------------------------------------------
# Rust's Unicode 8.0 view (see ``_category``), checked code point by code point in the tests
# --------------------------------------------------------------------------------------------

# HANUNOO SIGN PAMUDPOD (Mn in 8.0, Mc now), AHOM CONSONANT SIGN MEDIAL RA (Mn in 8.0, Mc from
# Unicode 15), CANADIAN SYLLABICS CHI SIGN (Po in 8.0, So now), SHARADA SANDHI MARK (Po in 8.0,
# Mn now).
_RECATEGORISED_SINCE_UNICODE_8 = {0x1734: "Mn", 0x1171E: "Mn", 0x166D: "Po", 0x111C9: "Po"}

# Inclusive ranges of code points that are format (Cf), non-spacing-mark (Mn) or punctuation (P*)
# characters in Unicode 9.0-17.0 but unassigned in 8.0. Only those categories change what the
# tokenizer does. The list reaches past Python 3.11's Unicode 14 (using the ``regex`` module's
# Unicode 17 tables) so that newer Pythons agree too.
_NEWER_THAN_UNICODE_8 = (
    (0x05C8, 0x05C9), (0x061D, 0x061D), (0x07FD, 0x07FD), (0x0890, 0x0891), (0x0897, 0x089F),
    (0x08CA, 0x08E2), (0x09FD, 0x09FE), (0x0A76, 0x0A76), (0x0AFA, 0x0AFF), (0x0B53, 0x0B55),
    (0x0C04, 0x0C04), (0x0C3C, 0x0C3C), (0x0C77, 0x0C77), (0x0C84, 0x0C84), (0x0D00, 0x0D00),
    (0x0D3B, 0x0D3C), (0x0D81, 0x0D81), (0x0EBA, 0x0EBA), (0x0ECE, 0x0ECE), (0x180F, 0x180F),
    (0x1885, 0x1886), (0x1ABF, 0x1AF0), (0x1B4E, 0x1B4F), (0x1B7D, 0x1B7F), (0x1DF6, 0x1DFB),
    (0x2E43, 0x2E4F), (0x2E52, 0x2E5D), (0x2E60, 0x2E63), (0xA82C, 0xA82C), (0xA8C5, 0xA8C5),
    (0xA8FF, 0xA8FF), (0xA9BD, 0xA9BD), (0x10D24, 0x10D27), (0x10D69, 0x10D6E), (0x10EAB, 0x10EAD),
    (0x10ECB, 0x10ED0), (0x10EF0, 0x10EFF), (0x10F46, 0x10F50), (0x10F55, 0x10F59),
    (0x10F82, 0x10F89), (0x11070, 0x11070), (0x11073, 0x11074), (0x110C2, 0x110C2),
    (0x110CD, 0x110CD), (0x111CF, 0x111CF), (0x1123E, 0x1123E), (0x11241, 0x11241),
    (0x1133B, 0x1133B), (0x113BB, 0x113C0), (0x113CE, 0x113CE), (0x113D0, 0x113D0),
    (0x113D2, 0x113D2), (0x113D4, 0x113D5), (0x113D7, 0x113D8), (0x113E1, 0x113E2),
    (0x11438, 0x1143F), (0x11442, 0x11444), (0x11446, 0x11446), (0x1144B, 0x1144F),
    (0x1145A, 0x1145B), (0x1145D, 0x1145E), (0x11660, 0x1166C), (0x116B9, 0x116B9),
    (0x1182F, 0x11837), (0x11839, 0x1183B), (0x1193B, 0x1193C), (0x1193E, 0x1193E),
    (0x11943, 0x11946), (0x119D4, 0x119D7), (0x119DA, 0x119DB), (0x119E0, 0x119E0),
    (0x119E2, 0x119E2), (0x11A01, 0x11A0A), (0x11A33, 0x11A38), (0x11A3B, 0x11A47),
    (0x11A51, 0x11A56), (0x11A59, 0x11A5B), (0x11A8A, 0x11A96), (0x11A98, 0x11A9C),
    (0x11A9E, 0x11AA2), (0x11B00, 0x11B09), (0x11B60, 0x11B60), (0x11B62, 0x11B64),
    (0x11B66, 0x11B66), (0x11BE1, 0x11BE1), (0x11C30, 0x11C36), (0x11C38, 0x11C3D),
    (0x11C3F, 0x11C3F), (0x11C41, 0x11C45), (0x11C70, 0x11C71), (0x11C92, 0x11CA7),
    (0x11CAA, 0x11CB0), (0x11CB2, 0x11CB3), (0x11CB5, 0x11CB6), (0x11D31, 0x11D36),
    (0x11D3A, 0x11D3A), (0x11D3C, 0x11D3D), (0x11D3F, 0x11D45), (0x11D47, 0x11D47),
    (0x11D90, 0x11D91), (0x11D95, 0x11D95), (0x11D97, 0x11D97), (0x11DF0, 0x11DF0),
    (0x11EF3, 0x11EF4), (0x11EF7, 0x11EF8), (0x11F00, 0x11F01), (0x11F36, 0x11F3A),
    (0x11F40, 0x11F40), (0x11F42, 0x11F4F), (0x11F5A, 0x11F5A), (0x11FFF, 0x11FFF),
    (0x12FF1, 0x12FF2), (0x13430, 0x13440), (0x13447, 0x13455), (0x1611E, 0x16129),
    (0x1612D, 0x1612F), (0x16D6D, 0x16D6F), (0x16E97, 0x16E9A), (0x16F4F, 0x16F4F),
    (0x16FE2, 0x16FE2), (0x16FE4, 0x16FE4), (0x1CF00, 0x1CF2D), (0x1CF30, 0x1CF46),
    (0x1D127, 0x1D128), (0x1D25B, 0x1D25C), (0x1E000, 0x1E006), (0x1E008, 0x1E018),
    (0x1E01B, 0x1E021), (0x1E023, 0x1E024), (0x1E026, 0x1E02A), (0x1E08F, 0x1E08F),
    (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF), (0x1E4EC, 0x1E4EF),
    (0x1E5EE, 0x1E5EF), (0x1E5FF, 0x1E5FF), (0x1E6E3, 0x1E6E3), (0x1E6E6, 0x1E6E6),
    (0x1E6EE, 0x1E6EF), (0x1E6F5, 0x1E6F5), (0x1E944, 0x1E94A), (0x1E95E, 0x1E95F),
)
_NEWER_THAN_UNICODE_8_STARTS = [lo for lo, _ in _NEWER_THAN_UNICODE_8]
