"""Learn a WordPiece vocabulary from captions, for training a small ALIGN from scratch.

WordPiece (Schuster & Nakajima 2012, used by BERT) covers text with a fixed list of word pieces:
a word is split greedily, longest piece first, into a word-initial piece ("un") and
continuation pieces marked "##" ("##aff", "##able"); see ``wordpiece`` in tokenizer.py. This
module learns such a list from text, bottom-up:

    1. pre-tokenise every caption exactly as ``BertTokenizer`` does (clean, space CJK, strip
       accents, lower-case, split punctuation; tokenizer.py steps 1-6) and count the words;
    2. the vocabulary starts as the special tokens, then the alphabet: every character, as itself
       where it starts a word and as "##c" where it continues one ("hugs" -> h ##u ##g ##s);
    3. repeatedly merge the adjacent pair of pieces (a, b) with the best score

           score(a, b) = freq(ab) / (freq(a) * freq(b))

       counted over the current segmentation of all words (each word weighted by its count),
       add the merged piece to the vocabulary ("un" + "##able" -> "unable", "##a" + "##b" ->
       "##ab": the second piece loses its "##"), re-segment the words that contained the pair,
       and stop at ``vocab_size`` or when no pair occurs ``min_frequency`` times.

How this differs from BPE: BPE merges the most *frequent* pair. The WordPiece score divides by
how often the parts occur on their own, so it favours pairs whose parts are rare apart and
nearly always appear together ("##g" "##s" in the hand example in tests/test_vocab.py), and
postpones pairs of very common pieces (such as "t" "##h" in English) until their parts have been
merged into longer pieces. It is a likelihood criterion: merging (a, b) raises the
log-likelihood of a unigram model of the pieces roughly in proportion to that ratio. One
consequence: the most frequent words are among the last to become whole, so a ``vocab_size``
reached before the pairs run out can leave them in pieces (``train.VOCAB_SIZE`` says how that
happened to `minialign train`).

Why the alphabet is kept: greedy WordPiece needs a vocab entry for every position of a word or
the whole word becomes [UNK]. With every single character present in both forms, any word made
of known characters can always be covered, however rare or unseen the word. Characters seen
fewer than ``min_frequency`` times are left out (words containing them tokenise to [UNK]), so
one stray emoji or typo does not take a slot.

Provenance: BERT's own vocab.txt came from Google's internal WordPiece trainer, which was never
released. The Hugging Face ``tokenizers`` WordPiece trainer is in practice BPE (it merges by
frequency and then relabels pieces with "##"). This module implements the likelihood score
above, as in the Hugging Face course's WordPiece chapter, with a deterministic tie-break: the
higher score, then the more frequent pair, then the smaller (a, b) in string order. Scores are
compared as floats; ``p / q`` of two integers is correctly rounded, so equal ratios tie exactly.

Cost: counting is one pass over the text (each distinct whitespace-separated chunk is
pre-tokenised once). Merging keeps pair and piece counts, an index from each pair to the words
holding it, and a heap of scores. A merge re-segments only the words that contain its pair and
re-scores only the pairs that touch a, b or ab (their piece counts changed), so merge m costs
O(L_m + P_m log H): L_m characters in the affected words, P_m pairs touching the three pieces,
H heap entries (stale ones are skipped when popped). A few thousand distinct words and a
1000-piece vocabulary take about half a second, counting included.

Use ``write_vocab`` to get a directory that both ``minialign.BertTokenizer.from_pretrained``
and transformers' ``BertTokenizer`` / ``AutoTokenizer.from_pretrained`` load.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping

import regex

from . import tokenizer as tok
from .tokenizer import BertTokenizer

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # [PAD] = 0: AlignTextConfig's pad_token_id
# BertTokenizer makes any word longer than this (max_input_chars_per_word) [UNK]; such words
# (URLs, runs of symbols) are left out of training.
MAX_WORD_CHARS = 100


# --------------------------------------------------------------------------------------------
# Counting words
# --------------------------------------------------------------------------------------------


def _pre_tokenize(chunk: str, do_lower_case: bool) -> list[str]:
    """tokenizer.py steps 2-6 on a special-token-free chunk: ``BertTokenizer._basic_tokenize``
    with strip_accents following do_lower_case, tokenize_chinese_chars on, no never_split."""
    words = []
    for word in tok.space_cjk(tok.clean_text(chunk)).split(" "):
        if word:
            if do_lower_case:
                word = tok.lowercase(tok.strip_accents(word))
            words.extend(tok.split_punctuation(word))
    return words


def count_words(texts: Iterable[str], *, lowercase: bool = True,
                special_tokens: Iterable[str] = SPECIAL_TOKENS) -> Counter[str]:
    """Pre-tokenise ``texts`` as ``BertTokenizer`` does and count the words.

    "A dog, a DOG." -> {"a": 2, "dog": 2, ",": 1, ".": 1}. Special tokens written in the text
    ("[MASK]") are cut out first, as the tokenizer's step 1 does, and not counted.
    """
    if isinstance(texts, str):
        raise TypeError("count_words: texts must be a list of strings, not one string")
    specials = sorted(set(special_tokens), key=len, reverse=True)
    special_pattern = regex.compile("|".join(regex.escape(t) for t in specials)) if specials else None
    chunks: Counter[str] = Counter()  # raw " "-separated chunks: each distinct one is pre-tokenised once
    n_texts = 0
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"count_words: texts[{i}] must be a str, got {type(text).__name__} ({text!r:.50})")
        n_texts += 1
        pieces = special_pattern.split(text) if special_pattern else [text]
        for piece in pieces:
            chunks.update(piece.split(" "))  # steps 2-3 never join across " " (see tokenizer.py)
    if n_texts == 0:
        raise ValueError("texts is empty: give at least one caption to learn a vocabulary from")
    words: Counter[str] = Counter()
    for chunk, n in chunks.items():
        for word in _pre_tokenize(chunk, lowercase):
            words[word] += n
    return words


def _symbols(word: str) -> list[str]:
    """The alphabet segmentation of a word: "hugs" -> ["h", "##u", "##g", "##s"]."""
    return [word[0]] + ["##" + c for c in word[1:]]


# --------------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------------


def _merge_symbols(symbols: list[str], a: str, b: str, merged: str) -> list[str]:
    """Replace each adjacent (a, b), left to right, by ``merged``: (##a, ##a) on ##a ##a ##a -> ##aa ##a."""
    out = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
            out.append(merged)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def wordpiece_merges(word_counts: Mapping[str, int], min_frequency: int = 2) -> Iterator[tuple[str, str, str]]:
    """Yield the WordPiece merges ``(a, b, merged)`` of ``word_counts``, best score first.

    Starts from the alphabet segmentation of every word and runs until no adjacent pair occurs
    ``min_frequency`` times (weighted by word count). Stop early by stopping iteration.
    See the module docstring for the score, the tie-break and the cost.
    """
    words = [_symbols(w) for w in word_counts]
    counts = list(word_counts.values())
    piece_freq: Counter[str] = Counter()  # freq(a): occurrences of piece a in the segmentation
    pair_freq: Counter[tuple[str, str]] = Counter()  # freq(ab): occurrences of a followed by b
    pair_words: defaultdict[tuple[str, str], set[int]] = defaultdict(set)  # pair -> words holding it
    pairs_of: defaultdict[str, set[tuple[str, str]]] = defaultdict(set)  # piece -> pairs it is in

    def count(i: int, sign: int) -> None:
        """Add (sign=+1) or remove (sign=-1) word i's pieces and pairs from the counts."""
        symbols, n = words[i], sign * counts[i]
        for s in symbols:
            piece_freq[s] += n
            if piece_freq[s] == 0:
                del piece_freq[s]
        for pair in itertools.pairwise(symbols):
            pair_freq[pair] += n
            if sign > 0:
                pair_words[pair].add(i)
                pairs_of[pair[0]].add(pair)
                pairs_of[pair[1]].add(pair)
            else:
                pair_words[pair].discard(i)
                if pair_freq[pair] == 0:
                    del pair_freq[pair], pair_words[pair]
                    pairs_of[pair[0]].discard(pair)
                    pairs_of[pair[1]].discard(pair)

    def key(pair: tuple[str, str]) -> tuple[float, int, str, str]:
        """Heap order: the highest score, then the highest pair count, then (a, b) in string order."""
        a, b = pair
        f = pair_freq[pair]
        return -f / (piece_freq[a] * piece_freq[b]), -f, a, b

    for i in range(len(words)):
        count(i, +1)
    heap = [key(p) for p, f in pair_freq.items() if f >= min_frequency]
    heapq.heapify(heap)
    while heap:
        entry = heapq.heappop(heap)
        pair = entry[2:]
        # Stale: the pair is gone, or its count or a part's count changed (a fresh entry was pushed).
        if pair_freq.get(pair, 0) < min_frequency or key(pair) != entry:
            continue
        a, b = pair
        merged = a + b[2:]  # b is never word-initial: "un" + "##able" -> "unable"
        yield a, b, merged
        for i in list(pair_words[pair]):
            count(i, -1)
            words[i] = _merge_symbols(words[i], a, b, merged)
            count(i, +1)
        # Only freq(a), freq(b) and freq(ab) changed, so only pairs touching them change score.
        for piece in {a, b, merged}:
            for p in pairs_of.get(piece, ()):
                if pair_freq[p] >= min_frequency:
                    heapq.heappush(heap, key(p))


# --------------------------------------------------------------------------------------------
# The vocabulary
# --------------------------------------------------------------------------------------------


def _check_count(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_tokens(name: str, tokens) -> list[str]:
    """A list of distinct, non-empty strings without whitespace (vocab.txt has one per line)."""
    if isinstance(tokens, str):
        raise TypeError(f"{name} must be a list of strings, not one string ({tokens!r:.50})")
    tokens = list(tokens)
    for t in tokens:
        if not isinstance(t, str) or not t or t != "".join(t.split()):
            raise ValueError(f"{name}: every token must be a non-empty string without whitespace, got {t!r}")
    duplicates = sorted(t for t, n in Counter(tokens).items() if n > 1)
    if duplicates:
        raise ValueError(f"{name} has duplicates: {duplicates}")
    return tokens


def learn_wordpiece_vocab(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    lowercase: bool = True,
    special_tokens: Iterable[str] = SPECIAL_TOKENS,
) -> list[str]:
    """Learn a WordPiece vocabulary of at most ``vocab_size`` tokens from captions.

    Args:
        texts: the training captions (any iterable of strings, read once).
        vocab_size: the vocabulary's size; fewer tokens come back when no pair is left that
            occurs ``min_frequency`` times.
        min_frequency: characters seen fewer times are left out of the alphabet (words holding
            them tokenise to [UNK] and are not trained on); a pair is merged only if it occurs
            at least this often.
        lowercase: lower-case and strip accents, as an uncased BERT does; pass the same value
            to ``write_vocab``.
        special_tokens: the first tokens, in order: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.

    Returns:
        The tokens in id order: special tokens, the alphabet (word-initial characters, then
        "##" characters, each sorted by code point), then merged pieces in merge order.
    """
    special_tokens = _check_tokens("special_tokens", special_tokens)
    _check_count("vocab_size", vocab_size, 1)
    _check_count("min_frequency", min_frequency, 1)
    word_counts = count_words(texts, lowercase=lowercase, special_tokens=special_tokens)

    char_freq: Counter[str] = Counter()
    for word, n in word_counts.items():
        if len(word) <= MAX_WORD_CHARS:
            for c in word:
                char_freq[c] += n
    known = {c for c, n in char_freq.items() if n >= min_frequency}
    words = [w for w in word_counts if len(w) <= MAX_WORD_CHARS]
    initial = sorted({w[0] for w in words} & known)
    continuation = sorted({c for w in words for c in w[1:]} & known)
    alphabet = initial + ["##" + c for c in continuation]
    # Merges are learned from the words that can be covered; the others tokenise to [UNK].
    word_counts = Counter({w: word_counts[w] for w in words if known.issuperset(w)})

    vocab = list(dict.fromkeys(special_tokens + alphabet))  # a special token could also be a character
    if vocab_size < len(vocab):
        raise ValueError(f"vocab_size={vocab_size} is too small: the {len(special_tokens)} special tokens and "
                         f"the alphabet of {len(alphabet)} characters (word-initial and '##' forms, "
                         f"min_frequency={min_frequency}) need {len(vocab)}")
    seen = set(vocab)
    if len(vocab) < vocab_size:
        for _, _, merged in wordpiece_merges(word_counts, min_frequency):
            if merged not in seen:  # two merges can spell the same piece: ("##a", "##bc"), ("##ab", "##c")
                seen.add(merged)
                vocab.append(merged)
                if len(vocab) == vocab_size:
                    break
    return vocab


def write_vocab(tokens: Iterable[str], directory: str | os.PathLike, *, lowercase: bool = True,
                model_max_length: int = 64) -> BertTokenizer:
    """Write ``vocab.txt`` and ``tokenizer_config.json`` to ``directory``; return the tokenizer.

    The tokens must include BERT's [PAD] [UNK] [CLS] [SEP] (and usually [MASK]). The config is
    written by ``BertTokenizer.save_pretrained`` (do_lower_case, strip_accents, model_max_length,
    the special tokens, tokenizer_class "BertTokenizer"), so ``minialign.BertTokenizer`` and
    transformers' ``BertTokenizer`` / ``AutoTokenizer`` ``.from_pretrained(directory)`` all load it.
    """
    tokens = _check_tokens("tokens", tokens)
    os.makedirs(directory, exist_ok=True)
    vocab_file = os.path.join(directory, tok.VOCAB_NAME)
    with open(vocab_file, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(t + "\n" for t in tokens)
    BertTokenizer(vocab_file, do_lower_case=lowercase, model_max_length=model_max_length).save_pretrained(directory)
    return BertTokenizer.from_pretrained(directory)
