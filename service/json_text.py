"""Bodies whose JSON escapes name a lone UTF-16 surrogate (``"\\ud800"``): valid JSON syntax, but no Unicode text.

Python's ``json`` decodes such an escape into a ``str`` that no UTF-8 encoder takes, so the request got past
validation and failed deep inside: in the tokenizer (``/score``, ``/v1/rerank``, ``/get_reward``) or the feedback
store, as a 500. RFC 8259 (section 8.2) leaves such strings' meaning unpredictable; the service refuses them at
the door, naming where the string is, once for every endpoint.

Surrogate escapes are common and fine in pairs (``json.dumps`` writes an emoji as ``"\\ud83d\\ude00"``), so a body
is decoded only when it holds a surrogate escape at all, which ordinary bodies do not.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def lone_surrogate(body: bytes) -> str | None:
    """Where ``body`` (JSON) holds a string with a lone surrogate, as ``body.items.0.prompt``; None when it holds
    none, or is no JSON at all (the endpoint's own parsing answers that)."""
    if not _SURROGATE_ESCAPE.search(body):
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[tuple[str, ...], Any]] = [(("body",), document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                return ".".join(path)
        elif isinstance(value, dict):
            for key, child in value.items():
                if not _encodable(key):
                    return ".".join((*path, "(a key)"))
                stack.append(((*path, key), child))
        elif isinstance(value, list):
            stack.extend(((*path, str(i)), child) for i, child in enumerate(value))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
