"""TRL: a real GRPOTrainer step on CPU whose rewards come over HTTP from a live rewardserve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rewardserve.trl import RemoteReward, score_item
from tests.helpers import bpe_tokenizer, require_module
from tests.server import running

require_module("trl", "pip install -e '.[dev]'")


class Recording(RemoteReward):
    """The adapter, remembering what it was asked and what it answered (to compare with TRL's logs)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[list[Any], list[Any], list[float]]] = []

    def __call__(self, prompts: Any, completions: Any, **columns: Any) -> list[float]:
        scores = super().__call__(prompts, completions, **columns)
        self.calls.append((list(prompts), list(completions), scores))
        return scores


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Qwen2 causal LM built from a config, with the byte-level BPE tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = bpe_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256, eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id))
    path = tmp_path_factory.mktemp("policy")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_grpo_trainer_logs_the_services_rewards(policy: Path, bert_onnx_bundle: Path, tmp_path: Path) -> None:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    prompts = ["how are you", "the sun is", "one two", "good day"] * 2
    with running(model=bert_onnx_bundle) as live:
        reward = Recording(live.url)
        config = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                            max_completion_length=6, max_steps=2, logging_steps=1, learning_rate=1e-3,
                            report_to=[], save_strategy="no", use_cpu=True, seed=0, bf16=False)
        trainer = GRPOTrainer(model=str(policy), reward_funcs=[reward], args=config,  # type: ignore[list-item]
                              train_dataset=Dataset.from_dict({"prompt": prompts}))
        trainer.train()
        rescored = [httpx.post(live.url + "/score", json={"items": [
            {"prompt": p, "completion": c} for p, c in zip(ps, cs, strict=True)]}).json()["scores"]
            for ps, cs, _ in reward.calls]
    logged = [e["rewards/rewardserve/mean"] for e in trainer.state.log_history if "rewards/rewardserve/mean" in e]
    assert len(reward.calls) >= 2 and len(logged) == 2
    for (_, _, scores), again in zip(reward.calls, rescored, strict=True):
        np.testing.assert_allclose(scores, again, atol=1e-6)  # what TRL got is what the service says
    means = [float(np.mean(scores)) for *_, scores in reward.calls]
    for value in logged:
        assert any(abs(value - m) < 1e-4 for m in means), (value, means)


def test_conversational_items_use_the_bundles_chat_formatting() -> None:
    prompt = [{"role": "user", "content": "hi"}]
    completion = [{"role": "assistant", "content": "hello"}]
    assert score_item(prompt, completion) == {"messages": [*prompt, *completion]}
    assert score_item("hi", completion) == {"messages": [{"role": "user", "content": "hi"}, *completion]}
    assert score_item(prompt, "hello") == {"prompt": prompt, "completion": "hello"}
    assert score_item("hi", "hello") == ("hi", "hello")


def test_conversational_completions_reach_a_live_chat_bundle_as_trained(qwen_onnx_bundle: Path) -> None:
    """TRL's conversational form, sent to a real server serving a ChatML bundle: the rewards equal the
    bundle's own scores of the same conversations (its chat template applied once, by the server)."""
    from tests.references import offline

    prompts = [[{"role": "user", "content": "how are you ?"}], [{"role": "user", "content": "the sun ?"}]]
    completions = [[{"role": "assistant", "content": "i am good ."}], [{"role": "assistant", "content": "one two"}]]
    with running(model=qwen_onnx_bundle) as live:
        rewards = RemoteReward(live.url)(prompts, completions, trainer_state=None)
    expected = offline(qwen_onnx_bundle, [(p, c[0]["content"]) for p, c in zip(prompts, completions, strict=True)])
    np.testing.assert_allclose(rewards, expected, atol=1e-5)


def test_best_of_n_example_keeps_the_highest_reward(policy: Path, bert_onnx_bundle: Path) -> None:
    import json
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "examples" / "best_of_n.py"
    with running(model=bert_onnx_bundle) as live:
        proc = subprocess.run([sys.executable, str(script), "--policy", str(policy), "--url", live.url, "--n", "4",
                               "--prompt", "how are you", "--max-new-tokens", "6"], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout)
        texts = [c["text"] for c in out["candidates"]]
        direct = httpx.post(live.url + "/score", json={"items": [
            {"prompt": "how are you", "completion": t} for t in texts]}).json()["scores"]
    rewards = [c["reward"] for c in out["candidates"]]
    np.testing.assert_allclose(rewards, direct, atol=1e-5)
    assert len(texts) == 4 and out["best_index"] == int(np.argmax(direct)) and out["best"] == texts[out["best_index"]]
