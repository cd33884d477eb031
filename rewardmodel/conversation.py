"""Chat messages and Anthropic-HH style transcripts.

A prompt is either plain text or a list of chat messages (``{"role", "content"}``). Models without a
chat template see messages rendered as an HH transcript (``"\\n\\nHuman: …\\n\\nAssistant:"``), so the
HH data and message data meet the model in the same shape.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from rewardmodel.errors import FormatError

Message: TypeAlias = dict[str, str]
Prompt: TypeAlias = str | list[Message]

HUMAN_MARK = "\n\nHuman:"
ASSISTANT_MARK = "\n\nAssistant:"
_ROLE_MARKS = {"user": HUMAN_MARK, "assistant": ASSISTANT_MARK, "system": "\n\nSystem:"}
ROLES = frozenset(_ROLE_MARKS)


def validate_messages(messages: Any, what: str = "messages") -> list[Message]:
    """Return ``messages`` as a list of ``{"role", "content"}`` dicts or raise ``FormatError``."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise FormatError(f"{what} must be a non-empty list of {{'role', 'content'}} objects")
    out: list[Message] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise FormatError(f"{what}[{i}] must be an object with 'role' and 'content'")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise FormatError(f"{what}[{i}].role must be one of {sorted(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise FormatError(f"{what}[{i}].content must be a string")
        out.append({"role": role, "content": content})
    return out


def render_transcript(messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
    """Render messages as an HH transcript; ends with the assistant mark when asked to."""
    text = "".join(f"{_ROLE_MARKS[m['role']]} {m['content']}" for m in messages)
    return text + ASSISTANT_MARK if add_generation_prompt else text


def transcript_to_messages(text: str) -> list[Message] | None:
    """Parse an HH transcript prompt (ending with the assistant mark) into messages.

    Returns ``None`` when ``text`` is not such a transcript or would not render back to itself, so the
    caller can fall back to treating it as one user message.
    """
    if not text.startswith(HUMAN_MARK) or not text.endswith(ASSISTANT_MARK):
        return None
    body = text[: -len(ASSISTANT_MARK)]
    marks = {mark: role for role, mark in _ROLE_MARKS.items()}
    pattern = "(" + "|".join(re.escape(m) for m in marks) + ")"
    parts = re.split(pattern, body)[1:]  # [mark, content, mark, content, …]
    messages = [
        {"role": marks[mark], "content": content[1:] if content.startswith(" ") else content}
        for mark, content in zip(parts[0::2], parts[1::2], strict=True)
    ]
    return messages if render_transcript(messages) == text else None


def split_conversation(messages: Sequence[Message]) -> tuple[list[Message], str]:
    """Split a conversation into (prompt messages, final assistant reply)."""
    msgs = validate_messages(messages)
    if msgs[-1]["role"] != "assistant":
        raise FormatError("the last message of a conversation to score must have role 'assistant'")
    if len(msgs) < 2:
        raise FormatError("a conversation to score needs at least one message before the assistant reply")
    return msgs[:-1], msgs[-1]["content"]


def split_transcript_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH transcripts into (shared prompt, chosen reply, rejected reply).

    The prompt is the common prefix of both, cut at its last ``"\\n\\nAssistant:"``. Using the common
    prefix (not each text's last assistant mark) survives real HH rows whose reply itself contains an
    ``Assistant:`` turn.
    """
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(ASSISTANT_MARK)
    if cut < 0:
        raise FormatError(
            "chosen and rejected transcripts share no '\\n\\nAssistant:' turn; "
            "give an explicit 'prompt' field instead"
        )
    end = cut + len(ASSISTANT_MARK)
    return chosen[:end], chosen[end:], rejected[end:]
