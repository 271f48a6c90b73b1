"""Exercise 02: BERT's basic tokenisation, the words WordPiece then cuts.

Before WordPiece (exercise 01), BERT cleans the text and splits it into words and punctuation
marks. Write ``basic_tokenize`` below, then check it from the repository root:

    minialign exercise check 02

Read first: docs/tokenizer.md, "Seven steps" (steps 2 to 6).
"""

import unicodedata

# The CJK ideograph blocks (first and last code point) whose every character becomes a word.
# Hangul, hiragana and katakana are not among them: those scripts put spaces between words.
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def basic_tokenize(text: str, do_lower_case: bool = True) -> list[str]:  # str -> [word]
    """The words and punctuation marks of ``text``, in order:

    1. Clean: drop NUL (U+0000), U+FFFD and every control or format character (``unicodedata``
       category Cc, Cf, Co or Cs) except "\\t", "\\n" and "\\r"; then turn every whitespace
       character (``str.isspace``) into " ".
    2. CJK: put a space on both sides of every character in CJK_RANGES.
    3. Split on " ". If ``do_lower_case``, in each word:
       a. strip accents: ``unicodedata.normalize("NFD", word)`` ("é" becomes "e" + U+0301), then
          drop the non-spacing marks (category Mn);
       b. lower-case.
    4. Cut each word around punctuation: every punctuation character is a word of its own. A
       character is punctuation when its category starts with "P", or when it is ASCII and
       neither a letter, a digit nor whitespace ("$", "+", "^", "`" are punctuation to BERT).

        basic_tokenize("Héllo, 犬!") == ["hello", ",", "犬", "!"]
    """

    def dropped(c):
        return c in "\x00\ufffd" or (c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs"))

    def is_cjk(c):
        return any(lo <= ord(c) <= hi for lo, hi in CJK_RANGES)

    def is_punctuation(c):
        ascii_symbol = c.isascii() and not (c.isalnum() or c.isspace())
        return ascii_symbol or unicodedata.category(c).startswith("P")

    text = "".join(" " if c.isspace() else c for c in text if not dropped(c))
    text = "".join(f" {c} " if is_cjk(c) else c for c in text)
    words = []
    for word in text.split(" "):
        if do_lower_case:
            word = unicodedata.normalize("NFD", word)
            word = "".join(c for c in word if unicodedata.category(c) != "Mn").lower()
        current = ""
        for c in word:
            if is_punctuation(c):
                words += [current, c] if current else [c]
                current = ""
            else:
                current += c
        if current:
            words.append(current)
    return words
