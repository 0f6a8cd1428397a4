"""Chunker: offsets and lines map back to the source, sizes hold, boundaries are natural."""

from __future__ import annotations

import re

import pytest

from hybridctx.chunk import StructuredChunker, structural_blocks
from hybridctx.errors import InvalidArgumentError, UnreadableDocumentError
from hybridctx.schema import Document


def chunk(tokenizer, text, max_tokens=40, overlap=0):
    return StructuredChunker(tokenizer, max_tokens, overlap).chunk(Document(id="d", text=text))


def assert_faithful(text, chunks, tokenizer, max_tokens):
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert c.start_line == text.count("\n", 0, c.start) + 1
        assert c.end_line == text.count("\n", 0, c.end - 1) + 1
        assert 0 < c.token_count <= max_tokens
        # Counting the chunk on its own agrees with the offset-based count (within a token).
        assert abs(tokenizer.count(c.text) - c.token_count) <= 1
    covered = [False] * len(text)
    for c in chunks:
        covered[c.start : c.end] = [True] * (c.end - c.start)
    lost = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert lost == [], f"characters not in any chunk: {lost[:10]}"


def test_markdown_splits_at_headings_and_keeps_code_fences_whole(tokenizer):
    text = (
        "# Install\n\nRun the installer and accept the licence.\n\n"
        "```python\nimport zephyr\nclient = zephyr.Client(retries=3)\n\nclient.get('x')\n```\n\n"
        "# Configure\n\nSet the retry count in the settings file.\n"
    )
    chunks = chunk(tokenizer, text, max_tokens=45)
    assert_faithful(text, chunks, tokenizer, 45)
    fence = text.index("```python")
    assert any(c.start <= fence and c.end >= text.rindex("```") + 3 for c in chunks), "code block was split"
    assert any(c.text.startswith("# Configure") for c in chunks), "heading did not start a chunk"
    assert [b for b in structural_blocks(text) if text[b[0]:b[1]].startswith("```")], "fence is a block"


def test_long_paragraph_falls_back_to_sentences(tokenizer):
    sentences = [f"Sentence number {i} talks about topic {i * 7} in some detail." for i in range(40)]
    text = " ".join(sentences)
    chunks = chunk(tokenizer, text, max_tokens=50)
    assert len(chunks) > 3
    assert_faithful(text, chunks, tokenizer, 50)
    assert all(c.text.endswith(".") for c in chunks), "a chunk ended mid-sentence"


def test_text_without_boundaries_is_cut_at_token_boundaries(tokenizer):
    text = "x" * 3 + "-".join(f"tok{i}" for i in range(600))
    chunks = chunk(tokenizer, text, max_tokens=64)
    assert len(chunks) > 5
    assert_faithful(text, chunks, tokenizer, 64)


def test_overlap_repeats_trailing_sentences(tokenizer):
    text = " ".join(f"Fact {i} is short." for i in range(60))
    chunks = chunk(tokenizer, text, max_tokens=40, overlap=12)
    assert_faithful(text, chunks, tokenizer, 40)
    for left, right in zip(chunks, chunks[1:]):
        assert right.start < left.end, "consecutive chunks do not overlap"
        assert right.start > left.start, "no progress"
    no_overlap = chunk(tokenizer, text, max_tokens=40, overlap=0)
    assert all(after.start >= before.end for before, after in zip(no_overlap, no_overlap[1:]))


def test_line_numbers_and_unicode(tokenizer):
    lines = [f"Línea {i}: naïve café — 東京 {i}." for i in range(1, 120)]
    text = "\n".join(lines) + "\n"
    chunks = chunk(tokenizer, text, max_tokens=60)
    assert_faithful(text, chunks, tokenizer, 60)
    first_line_numbers = [int(re.search(r"Línea (\d+)", c.text).group(1)) for c in chunks]
    assert first_line_numbers == [c.start_line for c in chunks]


def test_chunk_ids_and_metadata_come_from_the_document(tokenizer):
    doc = Document(id="guide", text="Alpha para.\n\nBeta para.", metadata={"source": "g.md", "team": "x"})
    chunks = StructuredChunker(tokenizer, 200, 0).chunk(doc)
    assert [c.id for c in chunks] == ["guide#0"]
    assert chunks[0].metadata == {"source": "g.md", "team": "x"}
    assert chunks[0].location == "g.md:1-3"


@pytest.mark.parametrize("text", ["", "   \n\t  \n"])
def test_empty_document_is_a_typed_error(tokenizer, text):
    with pytest.raises(UnreadableDocumentError, match="empty"):
        chunk(tokenizer, text)


def test_overlap_must_be_smaller_than_size(tokenizer):
    with pytest.raises(InvalidArgumentError, match="overlap_tokens"):
        StructuredChunker(tokenizer, 32, 32)


def test_a_long_numbered_list_is_cut_between_items_not_after_their_numbers(tokenizer):
    items = [f"{i}. {word}" for i, word in enumerate(["volonal", "lokaqui", "nalvoka", "husmigal"] * 30, start=1)]
    text = "Steps:\n" + "\n".join(items) + "\n\nA sentence ends here. Another follows."
    chunks = chunk(tokenizer, text, max_tokens=40)
    assert len(chunks) > 5
    assert_faithful(text, chunks, tokenizer, 40)
    for c in chunks:
        lines = [line for line in c.text.splitlines() if line]
        assert all(re.fullmatch(r"\d+\. \w+|Steps:|A sentence ends here\. Another follows\.", line)
                   for line in lines), f"an item was split from its number: {c.text!r}"
