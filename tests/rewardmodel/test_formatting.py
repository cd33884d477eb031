"""The formatting contract: exact token ids for every template and data form, truncation, padding sides."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from rewardmodel import (
    BundleError,
    EncodedInput,
    FormatError,
    FormatSpec,
    Formatter,
    SpecialToken,
    load_tokenizer,
    pad_batch,
    score_positions,
    split_budget,
)
from tests.helpers import CHATML, VOCAB, word_tokenizer

CLS, SEP = 101, 102
W = VOCAB  # word -> id of the word tokenizer
PAD = SpecialToken("<pad>", 99)


def bert_spec(max_length: int = 64) -> FormatSpec:
    return FormatSpec(template="pair", max_length=max_length, score_position="first", padding_side="right",
                      pad_token=SpecialToken("[PAD]", 0), use_token_type_ids=True)


def word_backend(chat: bool = False) -> Tokenizer:
    backend = Tokenizer.from_str(word_tokenizer(CHATML if chat else None).backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    return backend


def decoder_spec(template: str, max_length: int = 64, side: str = "left") -> FormatSpec:
    return FormatSpec(
        template=template, max_length=max_length, score_position="last", padding_side=side, pad_token=PAD,  # type: ignore[arg-type]
        eos_token=SpecialToken("</s>", W["</s>"]), bos_token=SpecialToken("<s>", W["<s>"]),
        suffix_ids=(W["</s>"],) if template == "concat" else (),
        bos="tokenizer" if template == "concat" else "template",
        chat_template=CHATML if template == "chat" else None,
        special_tokens={"bos_token": "<s>", "eos_token": "</s>"},
    )


@pytest.fixture(scope="module")
def bert(minilm_path: Path) -> Formatter:
    return Formatter(load_tokenizer(minilm_path), bert_spec())


def test_load_tokenizer_switches_off_the_files_fixed_padding(minilm_path: Path) -> None:
    # all-MiniLM-L6-v2's tokenizer.json pads every text to 128 tokens and truncates there
    assert len(load_tokenizer(minilm_path).encode("hi").ids) == 3


def test_encoder_pair_exact_ids(bert: Formatter) -> None:
    enc = bert.encode("What is 2 + 2?", "It is 4.")
    assert enc.input_ids == [CLS, 2054, 2003, 1016, 1009, 1016, 1029, SEP, 2009, 2003, 1018, 1012, SEP]
    assert enc.token_type_ids == [0] * 8 + [1] * 5
    assert (enc.prompt_tokens, enc.completion_tokens, enc.truncated) == (6, 4, False)


def test_encoder_messages_render_as_hh_transcript(bert: Formatter) -> None:
    messages = [{"role": "user", "content": "hi"}]
    assert bert.texts(messages, "hello") == ("\n\nHuman: hi\n\nAssistant:", "hello")
    # [CLS] human : hi assistant : [SEP] hello [SEP]
    assert bert.encode(messages, "hello").input_ids == [CLS, 2529, 1024, 7632, 3353, 1024, SEP, 7592, SEP]
    # the same transcript given as HH text formats identically
    assert bert.encode("\n\nHuman: hi\n\nAssistant:", "hello") == bert.encode(messages, "hello")


def test_truncation_cuts_the_prompt_from_the_left_and_keeps_the_completion(minilm_path: Path) -> None:
    f = Formatter(load_tokenizer(minilm_path), bert_spec(max_length=16))
    prompt = "one two three four five six seven eight nine ten eleven twelve"
    enc = f.encode(prompt, "It is 4.")
    kept = load_tokenizer(minilm_path).encode(prompt, add_special_tokens=False).ids[-9:]  # 16 - 3 special - 4
    assert enc.input_ids == [CLS, *kept, SEP, 2009, 2003, 1018, 1012, SEP]
    assert enc.truncated and enc.prompt_tokens == 9 and enc.completion_tokens == 4
    assert len(enc.input_ids) == 16


def test_overlong_completion_keeps_a_quarter_for_the_prompt(minilm_path: Path) -> None:
    f = Formatter(load_tokenizer(minilm_path), bert_spec(max_length=23))  # budget 20
    enc = f.encode("one two three four five six seven eight", " ".join(["yes"] * 40))
    assert (enc.prompt_tokens, enc.completion_tokens, enc.truncated) == (5, 15, True)
    assert enc.input_ids[1:6] == load_tokenizer(minilm_path).encode("four five six seven eight",
                                                                    add_special_tokens=False).ids


@pytest.mark.parametrize(
    ("budget", "n_prompt", "n_completion", "expected"),
    [
        (100, 30, 40, (30, 40)),  # fits: nothing cut
        (100, 80, 40, (60, 40)),  # prompt cut from the left
        (100, 80, 90, (25, 75)),  # completion would starve the prompt: prompt keeps a quarter
        (100, 10, 200, (10, 90)),  # short prompt kept whole
        (100, 0, 200, (0, 100)),
    ],
)
def test_split_budget(budget: int, n_prompt: int, n_completion: int, expected: tuple[int, int]) -> None:
    assert split_budget(budget, n_prompt, n_completion) == expected


def test_decoder_concat_exact_ids_with_bos_and_appended_eos() -> None:
    f = Formatter(word_backend(), decoder_spec("concat"))
    enc = f.encode("hello world ?", " i am fine .")
    assert enc.input_ids == [W["<s>"], W["hello"], W["world"], W["?"], W["i"], W["am"], W["fine"], W["."], W["</s>"]]
    assert enc.token_type_ids is None


def test_decoder_chat_exact_ids() -> None:
    f = Formatter(word_backend(chat=True), decoder_spec("chat"))
    enc = f.encode([{"role": "user", "content": "how are you ?"}], "i am good .")
    assert enc.input_ids == [
        W["<s>"], W["<|im_start|>"], W["user"], W["how"], W["are"], W["you"], W["?"], W["<|im_end|>"],
        W["<|im_start|>"], W["assistant"], W["i"], W["am"], W["good"], W["."], W["<|im_end|>"],
    ]
    assert enc.prompt_tokens == 10 and enc.completion_tokens == 5


def test_whole_text_of_a_concat_decoder_equals_its_prompt_plus_completion_and_is_cut_from_the_left() -> None:
    f = Formatter(word_backend(), decoder_spec("concat", max_length=8))
    assert f.encode_text("hello world ?").input_ids == f.encode("hello world", " ?").input_ids
    cut = f.encode_text("hello world ? i am fine .")
    # 8 = <s> + 6 text tokens + </s>: the oldest words go, the reply's end survives
    assert cut.input_ids == [W["<s>"], W["world"], W["?"], W["i"], W["am"], W["fine"], W["."], W["</s>"]]
    assert cut.truncated


def test_whole_text_of_a_chat_bundle_is_taken_as_rendered(minilm_path: Path) -> None:
    f = Formatter(word_backend(chat=True), decoder_spec("chat"))
    messages = [{"role": "user", "content": "how are you ?"}, {"role": "assistant", "content": "i am good ."}]
    rendered = "".join(f.texts(messages[:1], "i am good ."))
    assert f.encode_text(rendered).input_ids == f.encode(messages[:1], "i am good .").input_ids
    bert = Formatter(load_tokenizer(minilm_path), bert_spec())
    assert bert.encode_text("hi there").input_ids[0] == CLS and bert.encode_text("hi there").input_ids[-1] == SEP


def test_chat_template_turns_hh_transcripts_into_turns() -> None:
    f = Formatter(word_backend(chat=True), decoder_spec("chat"))
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hello world"},
                {"role": "user", "content": "how are you ?"}]
    hh = "\n\nHuman: hello\n\nAssistant: hello world\n\nHuman: how are you ?\n\nAssistant:"
    assert f.encode(hh, " i am fine .") == f.encode(messages, "i am fine .")


def test_chat_truncation_keeps_bos() -> None:
    f = Formatter(word_backend(chat=True), decoder_spec("chat", max_length=12))
    enc = f.encode([{"role": "user", "content": "one two three four five six"}], "i am good .")
    # budget 11 after BOS; the completion (5) is whole, the prompt keeps its last 6 tokens behind BOS
    assert enc.input_ids == [
        W["<s>"], W["four"], W["five"], W["six"], W["<|im_end|>"], W["<|im_start|>"], W["assistant"],
        W["i"], W["am"], W["good"], W["."], W["<|im_end|>"],
    ]
    assert enc.truncated and enc.prompt_tokens == 7


def test_pad_token_inside_the_input_is_refused() -> None:
    spec = replace(decoder_spec("concat"), pad_token=SpecialToken("hello", W["hello"]))
    with pytest.raises(FormatError, match="pad token"):
        Formatter(word_backend(), spec).encode("hello world ?", " i am fine .")


def test_pad_equal_to_eos_is_refused_for_last_token_scoring() -> None:
    with pytest.raises(BundleError, match="one token early"):
        replace(decoder_spec("concat"), pad_token=SpecialToken("</s>", W["</s>"]))


def test_bad_prompt_messages_are_a_format_error(bert: Formatter) -> None:
    with pytest.raises(FormatError, match=r"prompt\[0\]\.role"):
        bert.encode([{"role": "robot", "content": "hi"}], "x")


def _items() -> list[EncodedInput]:
    return [EncodedInput([5, 6, 7], None, 2, 1, False), EncodedInput([8], None, 0, 1, False)]


@pytest.mark.parametrize("side", ["left", "right"])
def test_pad_batch_and_score_positions_on_both_sides(side: str) -> None:
    spec = decoder_spec("concat", side=side)
    batch = pad_batch(_items(), spec)
    if side == "right":
        assert batch.input_ids.tolist() == [[5, 6, 7], [8, 99, 99]]
        assert score_positions(batch.attention_mask, spec).tolist() == [2, 0]
    else:
        assert batch.input_ids.tolist() == [[5, 6, 7], [99, 99, 8]]
        assert score_positions(batch.attention_mask, spec).tolist() == [2, 2]
    assert batch.token_type_ids is None
    assert batch.padding_ratio == pytest.approx(2 / 6)


def test_first_token_position_and_pad_multiple(bert: Formatter) -> None:
    batch = pad_batch([bert.encode("a", "b"), bert.encode("What is 2 + 2?", "It is 4.")], bert.spec,
                      pad_to_multiple_of=8)
    assert batch.input_ids.shape == (2, 16)
    assert batch.token_type_ids is not None and batch.token_type_ids[0].tolist()[:5] == [0, 0, 0, 1, 1]
    assert np.array_equal(score_positions(batch.attention_mask, bert.spec), [0, 0])
