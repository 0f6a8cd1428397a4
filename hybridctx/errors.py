"""Typed errors. Everything hybridctx raises on purpose derives from `HybridCtxError`.

Each message names the offending input (a path, an argument, a file in the knowledge
base), so that a user can act on it without reading a traceback.
"""

from __future__ import annotations


class HybridCtxError(Exception):
    """Base class of every error hybridctx raises on purpose."""


class InputError(HybridCtxError, ValueError):
    """The caller passed something hybridctx cannot use."""


class SourceNotFoundError(InputError, FileNotFoundError):
    """A path given to `add`/`index` does not exist."""

    def __init__(self, path: object) -> None:
        super().__init__(f"no such file or folder: {path}")
        self.path = path


class UnreadableDocumentError(InputError):
    """A file or text that cannot become a document: empty, binary, or not UTF-8."""

    def __init__(self, item: object, reason: str) -> None:
        super().__init__(f"{item}: {reason}")
        self.item = item
        self.reason = reason


class EmptyQueryError(InputError):
    def __init__(self, argument: str = "query") -> None:
        super().__init__(f"{argument} is empty: pass a non-blank question or search string")


class BudgetTooSmallError(InputError):
    def __init__(self, budget_tokens: int, needed: int) -> None:
        super().__init__(
            f"budget_tokens={budget_tokens} is smaller than the prompt without any passage "
            f"({needed} tokens: instructions and question); raise budget_tokens"
        )
        self.budget_tokens = budget_tokens
        self.needed = needed


class InvalidArgumentError(InputError):
    """An argument has a value out of its range or of the wrong shape."""


class BudgetTooLargeError(InvalidArgumentError):
    """A budget larger than the reading model's window: it could not read the prompt."""

    def __init__(self, budget_tokens: int, window_tokens: int) -> None:
        super().__init__(
            f"budget_tokens={budget_tokens:,} is larger than the model's context window ({window_tokens:,} tokens): "
            "it could not read the prompt; lower budget_tokens, or use a model with a larger window "
            "(Settings.context_window for the embedded model, or Settings.backend)"
        )
        self.budget_tokens = budget_tokens
        self.window_tokens = window_tokens


class KnowledgeBaseError(HybridCtxError):
    """The knowledge base on disk cannot be used as asked."""


class EmbeddingModelMismatchError(KnowledgeBaseError):
    def __init__(self, kb_path: object, built_with: str, requested: str) -> None:
        super().__init__(
            f"knowledge base {kb_path} was built with embedding model {built_with!r}, "
            f"not {requested!r}: open it with the same model or index into a new directory"
        )


class KnowledgeBaseFormatError(KnowledgeBaseError):
    """A file of the knowledge base is missing, damaged, or of an unknown format version."""


class KnowledgeBaseNotFoundError(KnowledgeBaseError):
    def __init__(self, kb_path: object) -> None:
        super().__init__(
            f"no knowledge base at {kb_path}: build one with `hybridctx index FILES --kb {kb_path}` "
            "(reading commands never create one, so a mistyped --kb is not an empty result)"
        )


class DiskFullError(KnowledgeBaseError):
    """The disk ran out of space while writing the knowledge base; it stands at its last commit."""


class KnowledgeBaseLockedError(KnowledgeBaseError):
    """Another process is writing to the knowledge base."""


class ModelUnavailableError(HybridCtxError):
    """A model (or the package that ships it) is not installed or cannot be loaded."""


class BackendError(HybridCtxError):
    """The generation backend failed to produce an answer."""


class DatasetUnavailableError(HybridCtxError):
    """A dataset (or the package that ships it) is not installed."""
