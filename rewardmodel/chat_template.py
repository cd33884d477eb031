"""Render a Hugging Face chat template without importing transformers.

The serving image carries ``tokenizers`` and ``jinja2`` but not transformers, so the bundle's chat
template is rendered here the way ``PreTrainedTokenizer.apply_chat_template(tokenize=False)`` renders
it: a sandboxed Jinja environment with ``trim_blocks``/``lstrip_blocks``, the ``loopcontrols``
extension, a ``tojson`` filter that keeps non-ASCII text, and the ``raise_exception`` and
``strftime_now`` globals. ``tests/rewardmodel/test_chat_template.py`` checks the output against
transformers itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rewardmodel.errors import FormatError


def _raise_exception(message: str) -> NoReturn:
    raise FormatError(f"the chat template refused the conversation: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except jinja2.TemplateError as exc:
        raise FormatError(f"the bundle's chat template does not compile: {exc}") from exc


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, str]],
    *,
    add_generation_prompt: bool,
    special_tokens: Mapping[str, str],
) -> str:
    """Render ``messages`` with ``template``; ``special_tokens`` supplies ``bos_token``, ``eos_token``, …"""
    try:
        return _compile(template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, tools=None, documents=None,
            **special_tokens,
        )
    except jinja2.TemplateError as exc:
        raise FormatError(f"the chat template failed on this conversation: {exc}") from exc
