"""Exercise 01: WordPiece, greedy longest-match-first.

BERT's tokenizer cuts every word into pieces of its vocabulary. Write ``wordpiece`` below, then
check it from the repository root:

    minialign exercise check 01

Read first: docs/tokenizer.md, "Seven steps" (step 7).
"""


def wordpiece(word: str, vocab, unk_token: str = "[UNK]", max_chars: int = 100) -> list[str]:  # str -> [piece]
    """Cut ``word`` into pieces of ``vocab`` (a dict or a set: only ``piece in vocab`` is asked), greedily:

        start = 0
        while start < len(word):
            piece = the LONGEST word[start:end] that is in the vocabulary, looked up as it is for
                    the first piece and as "##" + word[start:end] for every later one
            append the piece (with its "##"), start = end

    - If no piece starts at some position, the whole word is ``[unk_token]`` (not the pieces found
      so far).
    - A word longer than ``max_chars`` characters is ``[unk_token]`` without looking for pieces.

    With a vocabulary holding "un", "##aff" and "##able":
        wordpiece("unaffable", vocab) == ["un", "##aff", "##able"]
    """
    if len(word) > max_chars:
        return [unk_token]
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):  # the longest candidate first
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
        else:  # no piece starts here: the word cannot be covered
            return [unk_token]
        pieces.append(piece)
        start = end
    return pieces
