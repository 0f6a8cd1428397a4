"""An instruction-tuned model's chat template, reduced to the turns the packer frames a prompt
with (`ChatTurns`): the template is rendered once around placeholder messages and cut at them.

Rendering the real messages per call (`create_chat_completion`) would hide the prompt from the
packer, which must count it exactly and keep everything before the question a stable prefix.
"""

from __future__ import annotations

from collections.abc import Callable

from hybridctx.errors import ModelUnavailableError
from hybridctx.pack.prompt import ChatTurns

Messages = list[dict[str, str]]
_SYSTEM, _USER = "\x00system\x00", "\x00user\x00"


def chat_turns(render: Callable[[Messages], str], model: str) -> ChatTurns:
    """`render(messages)` is the model's template applied with the assistant's turn opened."""
    text = render([{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _USER}])
    before, found_system, rest = text.partition(_SYSTEM)
    between, found_user, after = rest.partition(_USER)
    if not (found_system and found_user) or not after:
        raise ModelUnavailableError(f"the chat template of {model} does not frame a system and a user message")
    return ChatTurns(system=before, user=between, assistant=after)
