"""Griffe extension for the API reference: docstrings written as plain text read well as Markdown.

mkdocstrings renders docstrings as Markdown. The docstrings here are written to be read in the
source, and two of their habits mean something else to Markdown; this fixes both in the rendered
page only (the source is left alone):

- BERT's special tokens in brackets, "so are [CLS] [SEP] [PAD] [UNK] [MASK]": two bracketed words
  in a row are a Markdown reference link (``[text] [label]``), so "[CLS] [SEP]" would become a
  broken link to "SEP" (a warning, and so a failed ``mkdocs build --strict``). Their brackets are
  escaped outside code spans, and Markdown prints them as written.
- A list right under the sentence that introduces it ("differs from the paper's recipe:" then
  "- the paper sums ..."): Markdown needs a blank line before a list, or it runs the items into
  the paragraph. One is added before a top-level ``- `` item that follows a line of prose.
  Indented lines (Args entries, code blocks) are not touched.
"""

from __future__ import annotations

import re

import griffe

SPECIAL_TOKEN = re.compile(r"(?<!\\)\[(CLS|SEP|PAD|UNK|MASK)\]")


def escape_special_tokens(text: str) -> str:
    """Escape the tokens' brackets, except inside backtick code spans (the odd pieces)."""
    pieces = re.split(r"(`+[^`]*`+)", text)
    return "".join(p if i % 2 else SPECIAL_TOKEN.sub(r"\\[\1\\]", p) for i, p in enumerate(pieces))


def separate_lists(text: str) -> str:
    """A blank line between a line of prose and a top-level "- " list item right under it."""
    lines = text.split("\n")
    out: list[str] = []
    for line in lines:
        previous = out[-1] if out else ""
        if line.startswith("- ") and previous.strip() and not previous.startswith((" ", "- ")):
            out.append("")
        out.append(line)
    return "\n".join(out)


class MarkdownFriendlyDocstrings(griffe.Extension):
    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = separate_lists(escape_special_tokens(obj.docstring.value))
