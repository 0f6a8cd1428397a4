"""Index stage, who sees what: the vector ids of a filter value or a principal, as compressed
bitmaps kept beside the chunks.

A scope is a set of names, in groups: a chunk is visible if it holds a name of every group
(`ChunkStore.visible_names`: one group per filter key, one for the readers). Each chunk's
names are indexed with its text in the lexical index, where tantivy filters by them inside
the BM25 search; the dense search needs the vector ids instead.

Listing those ids in SQL costs O(visible chunks): 3.9 s a query for a filter that matched 2M
of the billion-token KB's 9.8M chunks (`bench/bench_billion.py`). So, as search engines keep
posting lists for filter terms, the store keeps one roaring bitmap per metadata value, per
principal named in an ACL and one for the documents without an ACL, changed in the
transaction that changes the chunks. A scope's ids are a few unions and intersections of
bitmaps whose size follows the runs of consecutive ids (a document's chunks), not the ids:
the 2M-chunk filter's bitmap is 0.28 MB, and a scope's ids take milliseconds.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from pyroaring import BitMap64

from hybridctx.errors import InvalidArgumentError

PUBLIC = "public"  # the documents without an ACL: everyone reads them
_FILTER_KEY = re.compile(r"[A-Za-z0-9_\-]+")
_SCALARS = (str, int, float, bool)


def wanted_values(filters: Mapping[str, Any] | None) -> dict[str, list[Any]]:
    """Each filter key's wanted values; InvalidArgumentError names a malformed filter."""
    wanted_by_key: dict[str, list[Any]] = {}
    for key, wanted in (filters or {}).items():
        if not isinstance(key, str) or not _FILTER_KEY.fullmatch(key):
            raise InvalidArgumentError(
                f"filters: key {key!r} must be a metadata field name (letters, digits, '_', '-')"
            )
        values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        if not values or not all(isinstance(v, _SCALARS) for v in values):
            raise InvalidArgumentError(f"filters[{key!r}] must be a string, number, bool or a non-empty list of them")
        wanted_by_key[key] = values
    return wanted_by_key


def value_name(key: str, value: Any) -> str:
    """The bitmap name of metadata `key` equal to `value`, a scalar. Values compare as SQLite
    compares JSON values: True is 1, 2.0 is 2, "2" is not 2."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return "m:" + json.dumps([key, value])


def principal_name(principal: str) -> str:
    return "p:" + principal


def names_of(metadata: Mapping[str, Any], acl: list[str] | None) -> Iterator[str]:
    """The bitmaps a document's chunks belong to: each scalar metadata value (each member of a
    list, each value of a mapping, as a filter matches them), and its readers."""
    for key, value in metadata.items():
        members = value if isinstance(value, list) else value.values() if isinstance(value, dict) else [value]
        for member in members:
            if member is not None and isinstance(member, (str, int, float, bool)):
                yield value_name(key, member)
    if acl is None:
        yield PUBLIC
    else:
        yield from (principal_name(p) for p in acl)


class VisibleIds:
    """The vector ids a scope sees: a roaring bitmap, and the same set as a plain bitmap over
    the ids (bit i of byte i // 8), which FAISS's IDSelectorBitmap tests in O(1) per vector.
    `within` gives the ids of one id range sharing that plain bitmap (one per search, not per segment)."""

    def __init__(
        self, ids: BitMap64, key: str = "", whole: VisibleIds | None = None, count: int | None = None
    ) -> None:
        self.ids = ids
        self.key = key  # the scope's, for what an index works out once per scope (dense.py)
        self._whole = whole  # the set this one limits to an id range: its plain bitmap serves both
        self._bits: np.ndarray | None = None
        self.count = len(ids) if count is None else count

    def __len__(self) -> int:
        return self.count

    @property
    def bits(self) -> np.ndarray:
        """The plain bitmap, made on first use (27 ms for 4.9M ids; counting needs none)."""
        if self._whole is not None:
            return self._whole.bits
        if self._bits is None:
            self._bits = np.zeros(0, dtype=np.uint8)
            if self.ids:
                flags = np.zeros(self.ids.max() + 1, dtype=bool)
                flags[np.frombuffer(self.ids.to_array(), dtype=np.uint64)] = True
                self._bits = np.packbits(flags, bitorder="little")
        return self._bits

    def within(self, low: int, high: int) -> VisibleIds:
        """These ids limited to [low, high] (sharing the plain bitmap, which holds them all)."""
        return VisibleIds(self.ids, self.key, self, self.ids.range_cardinality(low, high + 1))

    def mask(self, vector_ids: np.ndarray) -> np.ndarray:
        """Which of `vector_ids` are in the set."""
        ids = np.asarray(vector_ids, dtype=np.int64)
        byte = ids >> 3
        inside = (ids >= 0) & (byte < len(self.bits))
        found = np.zeros(len(ids), dtype=bool)
        found[inside] = (self.bits[byte[inside]] >> (ids[inside] & 7).astype(np.uint8)) & 1 == 1
        return found
