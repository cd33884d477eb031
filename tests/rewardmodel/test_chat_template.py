"""Our transformers-free chat-template renderer renders exactly what transformers renders."""

from __future__ import annotations

import pytest

from rewardmodel import FormatError
from rewardmodel.chat_template import render_chat
from tests.helpers import CHATML, word_tokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "hello"}],
    [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"},
     {"role": "assistant", "content": "hello world"}, {"role": "user", "content": "ünïcödé ?"}],
]
# A template with the features real ones use: tojson, loop controls, namespace, raise_exception.
RICH = (
    "{% set ns = namespace(n=0) %}{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}{% endif %}"
    "{% set ns.n = ns.n + 1 %}[{{ ns.n }}] {{ m['role'] | upper }}: {{ m['content'] | tojson }}\n"
    "{% endfor %}{% if add_generation_prompt %}[{{ ns.n + 1 }}] ASSISTANT: {% endif %}"
)


@pytest.mark.parametrize("template", [CHATML, RICH])
@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_matches_transformers(template: str, conversation: list[dict[str, str]], add_generation_prompt: bool) -> None:
    tok = word_tokenizer(template)
    expected = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_generation_prompt)
    ours = render_chat(template, conversation, add_generation_prompt=add_generation_prompt,
                       special_tokens={"bos_token": "<s>", "eos_token": "</s>"})
    assert ours == expected


def test_template_exceptions_become_format_errors() -> None:
    template = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first turn must be user') }}{% endif %}"
    with pytest.raises(FormatError, match="first turn must be user"):
        render_chat(template, [{"role": "assistant", "content": "x"}], add_generation_prompt=False, special_tokens={})
