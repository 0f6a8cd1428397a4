"""The backend interface: a `Backend` continues a PackedContext's prompt into a `Generation`.

Every backend counts prompts exactly as its model reads them (`token_counter`) and refuses,
before any work, a prompt whose answer would not fit its window (`check_fits`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from hybridctx.errors import InvalidArgumentError
from hybridctx.pack.prompt import ChatTurns, ControlTokens, PromptTemplate
from hybridctx.schema import Answer, PackedContext, Usage
from hybridctx.tokens import TokenCounter

# A base (not instruction-tuned) model continues text: stop where a new section would start,
# including a passage delimiter it echoes. At most 4 sequences (OpenAI's limit); an
# instruction-tuned model's end-of-turn token is its end of sequence, where engines stop anyway.
DEFAULT_STOP = ("\nQuestion:", "\n\n", "<passage", "</passage")
# A chat model's turn ends with its end-of-turn token, where engines stop: it may write
# paragraphs and lists, and only an echoed passage delimiter cuts it short.
CHAT_STOP = ("<passage", "</passage")


def stops(stop: Sequence[str] | None, chat: ChatTurns | None) -> list[str]:
    """`stop` if given, else the default for the prompt's format (`chat`: the model's turns)."""
    return list(stop if stop is not None else DEFAULT_STOP if chat is None else CHAT_STOP)


@dataclass
class Generation:
    text: str
    usage: Usage


class Backend(Protocol):
    """A generating model. `context_window` is its whole window (prompt plus answer)."""

    name: str
    context_window: int

    @property
    def model_id(self) -> str:
        """Names the engine and the model, e.g. `llama.cpp/gemma-3-270m.gguf`: what a
        calibration of its effective context is stored under."""
        ...

    def token_counter(self) -> TokenCounter:
        """Counts prompt tokens exactly as this backend's model reads them."""
        ...

    def control_tokens(self) -> frozenset[str]:
        """The strings this model's tokenizer turns into control tokens when they appear in a
        prompt: the packer escapes them in everything it quotes."""
        ...

    def chat_turns(self) -> ChatTurns | None:
        """The turns of this model's chat template, which the packer frames its prompt with;
        None: a base model, which continues a completion prompt."""
        ...

    def generate(
        self, context: PackedContext, max_new_tokens: int = 200, temperature: float = 0.0,
        stop: Sequence[str] | None = None, on_text: Callable[[str], None] | None = None,
        choices: Sequence[str] | None = None,
    ) -> Generation:
        """Continue the context's prompt; `stop` replaces the default (`stops`). `on_text` receives
        the answer's text as the backend produces it (piece by piece where it streams).
        `choices`: the answer is exactly one of these strings (constrained decoding; see
        `check_choices`)."""
        ...

    def generate_many(
        self, contexts: Sequence[PackedContext], max_new_tokens: int = 200, temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> list[Generation]:
        """`generate` for each context, batched where the backend can (prefixes shared once)."""
        ...

    def close(self) -> None:
        """Free the model or the connection, when its owner is done with it."""
        ...


def template_for(backend: Backend, template: PromptTemplate | None = None) -> PromptTemplate:
    """`template` (`ask`'s by default) as `backend`'s model reads it: its control tokens escaped
    in everything quoted, framed by its chat turns where it has them."""
    return replace(
        template or PromptTemplate(), control_tokens=ControlTokens(backend.control_tokens()),
        chat=backend.chat_turns(),
    )


def check_choices(choices: Sequence[str] | None) -> list[str] | None:
    """Choices a backend can constrain its answer to: at least one, none empty. The model
    picks token by token among them (a llama.cpp grammar, vLLM's structured outputs), so it
    can only answer with what it is offered."""
    if choices is None:
        return None
    chosen = list(dict.fromkeys(choices))
    if not chosen or not all(chosen):
        raise InvalidArgumentError(f"choices must be one or more non-empty strings, got {list(choices)!r}")
    return chosen


def check_fits(prompt_tokens: int, max_new_tokens: int, context_window: int) -> None:
    """Refuse, before any work, a prompt whose answer would not fit the model's window."""
    if prompt_tokens + max_new_tokens > context_window:
        raise InvalidArgumentError(
            f"prompt ({prompt_tokens} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's context window ({context_window}); lower budget_tokens"
        )


def total_usage(parts: Sequence[Generation | Answer], seconds: float | None = None) -> Usage:
    """Usage summed over the calls one answer took; `seconds` overrides the sum of their
    times where some ran in one batch."""
    usages = [p.usage for p in parts]
    cached = [u.cached_tokens for u in usages if u.cached_tokens is not None]
    return Usage(
        prompt_tokens=sum(u.prompt_tokens for u in usages),
        generated_tokens=sum(u.generated_tokens for u in usages),
        cached_tokens=sum(cached) if cached else None,
        seconds=sum(u.seconds for u in usages) if seconds is None else seconds,
        first_token_seconds=usages[0].first_token_seconds,
    )
