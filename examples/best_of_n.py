"""Best-of-n sampling with a rewardserve reranker: sample n replies from a policy, keep the best by /rerank.

    python examples/best_of_n.py --policy Qwen/Qwen2.5-0.5B-Instruct --url http://127.0.0.1:8000 \\
        --n 8 --prompt "How do I boil an egg?"

The policy is any transformers causal LM (a hub name or a local directory); with a chat template the
prompt is sent as a user turn. Prints one JSON object: the candidates, their rewards, and the best.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rewardserve.client import RewardClient


def sample(policy: str, prompt: str, n: int, max_new_tokens: int, seed: int) -> list[str]:
    """``n`` sampled replies of ``policy`` to ``prompt``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy).eval()
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = prompt
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=not tokenizer.chat_template)
    with torch.inference_mode():
        out = model.generate(**inputs, do_sample=True, num_return_sequences=n, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def best_of_n(client: RewardClient, prompt: str, candidates: list[str]) -> dict[str, Any]:
    """The candidates ranked by the reward model (one /rerank call; identical candidates scored once)."""
    ranked = client.rerank(prompt, candidates)
    rewards = {r["index"]: r["score"] for r in ranked["results"]}
    return {"prompt": prompt, "candidates": [{"text": c, "reward": rewards[i]} for i, c in enumerate(candidates)],
            "best_index": ranked["best_index"], "best": candidates[ranked["best_index"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="causal LM: hub name or local directory")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="rewardserve base URL")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    candidates = sample(args.policy, args.prompt, args.n, args.max_new_tokens, args.seed)
    with RewardClient(args.url, api_key=args.api_key) as client:
        print(json.dumps(best_of_n(client, args.prompt, candidates), indent=2))


if __name__ == "__main__":
    main()
