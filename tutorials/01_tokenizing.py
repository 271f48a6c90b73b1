# %% [markdown]
# # 1. Tokenizing a caption
#
# ALIGN's text tower reads WordPiece ids. This tutorial runs minialign's `BertTokenizer` (plain
# Python, `minialign/tokenizer.py`) on captions, step by step. It uses the vocabulary of the
# embedded default model, which was learned from noisy alt-text about coloured shapes
# (`minialign/vocab.py`). See docs/tokenizer.md for the walkthrough.

# %%
from minialign.tokenizer import BertTokenizer

tokenizer = BertTokenizer.from_pretrained("align-nano")
print("vocabulary size:", tokenizer.vocab_size)

# %% [markdown]
# Words the vocabulary knows stay whole; other words split into pieces, continuations marked
# with `##`. Upper case is folded and punctuation split off first.

# %%
for caption in ["A red circle.", "photo of a small crimson disc", "IMG_2041.jpg star, blue!"]:
    print(f"{caption!r:40} -> {tokenizer.tokenize(caption)}")

# %% [markdown]
# The ids the model reads: `[CLS]` first, `[SEP]` last, padding to the longest caption with
# `[PAD]` (id 0), and an attention mask that is 1 on real tokens.

# %%
batch = tokenizer(["a red circle", "stock photo of a large yellow star on grey"], padding="longest")
for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
    print(tokenizer.convert_ids_to_tokens(list(ids)))
    print(list(mask))
assert batch["input_ids"][0][0] == tokenizer.convert_tokens_to_ids("[CLS]")
