"""minialign.vocab: learning a WordPiece vocabulary.

Order: the Hugging Face course's example merged by hand, the incremental trainer against a
from-scratch recount after every merge (hypothesis word counts), the shape of the vocabulary
(special tokens, size, determinism, no duplicates), what it does to the training captions, then
the written directory in transformers' BertTokenizer and AutoTokenizer, and every bad input.

Captions come from ``make_captions`` in test_tokenizer.py, the same generator the tokenizer tests
and benchmark use.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_tokenizer import make_captions, reference_tokenizer

from minialign import BertTokenizer
from minialign.vocab import (
    SPECIAL_TOKENS,
    count_words,
    learn_wordpiece_vocab,
    wordpiece_merges,
    write_vocab,
)

# The word counts of the Hugging Face course's WordPiece chapter.
COURSE_WORDS = {"hug": 10, "pug": 5, "pun": 12, "bun": 4, "hugs": 5}
COURSE_TEXT = " ".join(w for w, n in COURSE_WORDS.items() for _ in range(n))


@pytest.fixture(scope="module")
def captions() -> list[str]:
    return make_captions(300, seed=1)


# -- one case by hand ----------------------------------------------------------------------------


def test_course_example_merges_by_hand():
    # Start: h ##u ##g (10)  p ##u ##g (5)  p ##u ##n (12)  b ##u ##n (4)  h ##u ##g ##s (5)
    # freq: h 15, p 17, b 4, ##u 36, ##g 20, ##n 16, ##s 5;  score = freq(ab) / (freq(a) freq(b))
    expected = [
        # (##g, ##s) 5/(20*5) = 1/20 beats the five pairs at 1/36 (e.g. (h, ##u) 15/(15*36)).
        ("##g", "##s", "##gs"),
        # Now all six pairs score 1/36 (##g has 15, ##gs 5): the tie goes to the most frequent
        # pair, (p, ##u) with 17. (The course takes (h, ##u), the first in its dict order.)
        ("p", "##u", "pu"),
        # ##u has 19 left: (h, ##u), (b, ##u), (##u, ##gs) all score 1/19; (h, ##u) is the most frequent.
        ("h", "##u", "hu"),
        # ##u has 4 left, all in "bun": (b, ##u) 4/(4*4) = 1/4.
        ("b", "##u", "bu"),
        # (hu, ##gs) 5/(15*5) = 1/15 > (bu, ##n) 4/(4*16) = 1/16 > (hu, ##g) 10/(15*15) = 2/45.
        ("hu", "##gs", "hugs"),
        # hu has 10 left: (hu, ##g) 10/(10*15) = 1/15 > (bu, ##n) 1/16 > (pu, ##g) 5/(17*5) = 1/17.
        ("hu", "##g", "hug"),
        ("bu", "##n", "bun"),  # 1/16 > 1/17
        # (pu, ##n) 12/(17*12) and (pu, ##g) 5/(17*5) tie at 1/17: the more frequent pair first.
        ("pu", "##n", "pun"),
        ("pu", "##g", "pug"),
    ]  # every word is whole: no pairs left
    assert list(wordpiece_merges(COURSE_WORDS)) == expected

    alphabet = ["b", "h", "p", "##g", "##n", "##s", "##u"]  # word-initial, then "##", each sorted
    vocab = learn_wordpiece_vocab([COURSE_TEXT], vocab_size=15)
    assert vocab == list(SPECIAL_TOKENS) + alphabet + ["##gs", "pu", "hu"]
    assert learn_wordpiece_vocab([COURSE_TEXT], vocab_size=100)[12:] == [m for _, _, m in expected]


def test_count_words_pre_tokenises_like_bert_tokenizer():
    texts = ["The DOG, Café!", "the dog [MASK] 犬猫", "a\u3000dog\x00s\tdog"]
    assert count_words(texts) == {"the": 2, "dog": 3, ",": 1, "cafe": 1, "!": 1, "犬": 1, "猫": 1, "a": 1,
                                  "dogs": 1}
    assert count_words(["The Café"], lowercase=False) == {"The": 1, "Café": 1}


def test_min_frequency_drops_rare_pairs_and_characters():
    assert list(wordpiece_merges({"ab": 1, "cd": 3}, min_frequency=2)) == [("c", "##d", "cd")]
    # "x" occurs once: not in the alphabet, and "oxo" is not trained on (it would be [UNK]).
    vocab = learn_wordpiece_vocab(["oxo", "oo oo"], vocab_size=100, min_frequency=2)
    assert vocab == list(SPECIAL_TOKENS) + ["o", "##o", "oo"]
    assert "##x" in learn_wordpiece_vocab(["oxo", "oo oo"], vocab_size=100, min_frequency=1)


# -- the incremental trainer against a recount from scratch -------------------------------------


def reference_merges(word_counts: dict[str, int], min_frequency: int) -> list[tuple[str, str, str]]:
    """The same merges, counted from scratch after every merge, with exact fractions: O(merges x text)."""
    words = {w: [w[0]] + ["##" + c for c in w[1:]] for w in word_counts}
    merges = []
    while True:
        pieces, pairs = Counter(), Counter()
        for w, symbols in words.items():
            for s in symbols:
                pieces[s] += word_counts[w]
            for pair in itertools.pairwise(symbols):
                pairs[pair] += word_counts[w]
        candidates = [(Fraction(f, pieces[a] * pieces[b]), f, (a, b)) for (a, b), f in pairs.items()
                      if f >= min_frequency]
        if not candidates:
            return merges
        best_score, best_freq, _ = max(candidates)
        a, b = min(p for s, f, p in candidates if (s, f) == (best_score, best_freq))
        merges.append((a, b, a + b[2:]))
        for w, symbols in words.items():
            out, i = [], 0
            while i < len(symbols):
                if symbols[i : i + 2] == [a, b]:
                    out.append(a + b[2:])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            words[w] = out


# Few letters, so that pieces repeat inside words ("aaab": (##a, ##a) overlaps itself).
word_counts = st.dictionaries(st.text(alphabet="abc", min_size=1, max_size=7), st.integers(1, 6), max_size=12)


@given(word_counts, st.integers(1, 3))
def test_incremental_counts_match_a_recount(counts, min_frequency):
    assert list(wordpiece_merges(counts, min_frequency)) == reference_merges(counts, min_frequency)


# -- the vocabulary ------------------------------------------------------------------------------


def test_special_tokens_size_determinism_and_no_duplicates(captions):
    alphabet_size = 46  # the captions' characters: 23 word-initial and 23 "##" forms
    for vocab_size in [len(SPECIAL_TOKENS) + alphabet_size, 100, 200]:
        vocab = learn_wordpiece_vocab(captions, vocab_size)
        assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        assert len(vocab) == vocab_size
        assert len(set(vocab)) == len(vocab)
        shuffled = random.Random(0).sample(captions, len(captions))  # the order of the text does not matter
        assert learn_wordpiece_vocab(shuffled, vocab_size) == vocab
    # Nothing occurs 10**9 times: no alphabet, no merges.
    assert learn_wordpiece_vocab(captions, 100, min_frequency=10**9) == list(SPECIAL_TOKENS)
    everything = learn_wordpiece_vocab(captions, vocab_size=100_000)  # stops when no pair is left
    assert len(everything) < 100_000 and len(set(everything)) == len(everything)
    assert learn_wordpiece_vocab(captions, 200) == everything[:200]  # a smaller size is a prefix


def test_custom_special_tokens_come_first():
    vocab = learn_wordpiece_vocab(["x y x y"], 100, special_tokens=["<pad>", "[UNK]", "x"])
    assert vocab == ["<pad>", "[UNK]", "x", "y"]  # "x" is not repeated as a character


def test_training_captions_tokenize_without_unknowns(captions, tmp_path):
    vocab = learn_wordpiece_vocab(captions, vocab_size=150)
    tokenizer = write_vocab(vocab, tmp_path)
    assert tokenizer.get_vocab() == {t: i for i, t in enumerate(vocab)}
    for caption in captions:
        assert "[UNK]" not in tokenizer.tokenize(caption), caption
    # The score at work: "of" (373 x "the", 118 x "of" in the captions) is one token at this size
    # but "the" is not yet, because "t", "##h" and "##e" are common on their own too.
    assert tokenizer.tokenize("of the") == ["of", "t", "##h", "##e"]
    # With room for every merge, every word seen min_frequency (2) times or more is one token:
    # each of its pairs occurs that often, so merging only stops once the word is one piece.
    counts = count_words(captions)
    assert counts["the"] > counts["of"] > 100
    full = write_vocab(learn_wordpiece_vocab(captions, vocab_size=100_000), tmp_path / "full")
    assert all(full.tokenize(w) == [w] for w, n in counts.items() if n >= 2)


def test_unseen_words_split_into_learned_pieces(captions, tmp_path):
    tokenizer = write_vocab(learn_wordpiece_vocab(captions, vocab_size=300), tmp_path)
    pieces = tokenizer.tokenize("dogs riding skateboards")
    assert "[UNK]" not in pieces and len(pieces) > 3
    assert tokenizer.tokenize("a zebra") == ["a", "[UNK]"]  # "z" never occurs in the captions


# -- the written directory in transformers -------------------------------------------------------

# Training captions, unseen words, punctuation, case and accents, CJK, special tokens in the text.
PROBES = [
    "A small dog running on the beach.",
    "Three horses walking across the street!",
    "an unaffable zebra: jumping, galloping; (quickly) -- 'really'?",
    "CAFÉ Ünïcödé naïve RÉSUMÉ",
    "犬 と 猫 in the kitchen",
    "a [MASK] sitting on a [UNK] table",
    "",
    "a " * 80,  # longer than model_max_length
]


def test_matches_transformers(captions, tmp_path):
    from transformers import AutoTokenizer

    vocab = learn_wordpiece_vocab(captions, vocab_size=200)
    ours = write_vocab(vocab, tmp_path, model_max_length=64)
    assert BertTokenizer.from_pretrained(tmp_path).get_vocab() == ours.get_vocab()
    by_file = reference_tokenizer(tmp_path / "vocab.txt")  # transformers 5 takes the file as vocab=
    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    assert (ours.model_max_length, auto.model_max_length) == (64, 64)
    texts = PROBES + captions[:50]
    for theirs in (by_file, auto):
        assert [ours(t)["input_ids"] for t in texts] == [theirs(t)["input_ids"] for t in texts]
    kwargs = {"padding": "max_length", "truncation": True}  # pads and truncates to model_max_length = 64
    assert ours(texts, **kwargs)["input_ids"] == auto(texts, **kwargs)["input_ids"]


def test_cased_vocab_matches_transformers(captions, tmp_path):
    from transformers import AutoTokenizer

    vocab = learn_wordpiece_vocab(captions + PROBES, vocab_size=250, lowercase=False)
    assert "A" in vocab and "##É" in vocab  # case and accents are kept ("CAFÉ", "résumé" -> "RÉSUMÉ")
    ours = write_vocab(vocab, tmp_path, lowercase=False)
    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    assert [ours(t)["input_ids"] for t in PROBES] == [auto(t)["input_ids"] for t in PROBES]


# -- bad input -----------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"vocab_size=10 is too small.*need 12"):
        learn_wordpiece_vocab([COURSE_TEXT], vocab_size=10)  # 5 special tokens + 7 characters
    with pytest.raises(ValueError, match="texts is empty"):
        learn_wordpiece_vocab([], vocab_size=100)
    with pytest.raises(ValueError, match="texts is empty"):
        learn_wordpiece_vocab(iter(()), vocab_size=100)
    with pytest.raises(ValueError, match=r"special_tokens has duplicates: \['\[PAD\]'\]"):
        learn_wordpiece_vocab(["a"], 100, special_tokens=["[PAD]", "[UNK]", "[PAD]"])
    with pytest.raises(ValueError, match="special_tokens: every token must be a non-empty string"):
        learn_wordpiece_vocab(["a"], 100, special_tokens=["[PAD]", "[U NK]"])
    with pytest.raises(ValueError, match="vocab_size must be an int >= 1"):
        learn_wordpiece_vocab(["a"], vocab_size=1.5)
    with pytest.raises(ValueError, match="min_frequency must be an int >= 1"):
        learn_wordpiece_vocab(["a"], 100, min_frequency=0)
    with pytest.raises(TypeError, match="not one string"):
        learn_wordpiece_vocab("a dog", 100)
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        learn_wordpiece_vocab(["a dog", None], 100)
    with pytest.raises(ValueError, match=r"tokens has duplicates: \['a'\]"):
        write_vocab([*SPECIAL_TOKENS, "a", "a"], tmp_path)
    with pytest.raises(ValueError, match="lacks unk_token"):
        write_vocab(["[PAD]", "[CLS]", "[SEP]", "a"], tmp_path)


def test_a_thousand_merges_on_two_thousand_words():
    # The size the module docstring times (~0.5 s here): 2000+ distinct pseudo-words, 1000 tokens.
    rng = random.Random(0)
    syllables = ["".join(p) for p in itertools.product("bdgklmnprst", "aeiou")]
    texts = [" ".join("".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(10)) for _ in range(400)]
    assert len(count_words(texts)) > 2000
    assert len(learn_wordpiece_vocab(texts, vocab_size=1000)) == 1000


def test_the_training_vocabulary_keeps_every_colour_and_shape_word_whole(tmp_path):
    # The score merges the most frequent words last (module docstring): a cap that stops the
    # learner early leaves "red" as r ##e ##d. recipe.VOCAB_SIZE must let it finish on the
    # captions `minialign train` learns from, so that each colour and shape word, synonyms
    # included, is one token the text tower can attach a meaning to.
    from minialign import synthetic
    from minialign.training import recipe

    captions = [e.caption for e in synthetic.generate(recipe.TRAIN_EXAMPLES, split="train", seed=0,
                                                      image_size=recipe.IMAGE_SIZE,
                                                      unnamed_colour_fraction=recipe.UNNAMED_COLOUR_FRACTION,
                                                      variety=recipe.VARIETY)]
    vocab = learn_wordpiece_vocab(captions, recipe.VOCAB_SIZE)
    assert len(vocab) < recipe.VOCAB_SIZE, "the learner stopped at the cap, not when it ran out of pairs"
    words = sorted({word for forms in synthetic.SYNONYMS.values() for form in forms for word in form.split()})
    tokenizer = write_vocab(vocab, tmp_path)
    split = {word: pieces for word in words if len(pieces := tokenizer.tokenize(word)) > 1}
    assert not split, f"words the vocabulary splits into pieces: {split}"
