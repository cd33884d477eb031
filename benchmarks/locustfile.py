"""Locust load test for rewardserve: the chat-rerank profile and the many-small-clients profile.

    REWARDSERVE_DATA=../shared/data/hh_harmless_train.jsonl \\
        locust -f benchmarks/locustfile.py --host http://127.0.0.1:8000 --headless -u 64 -r 16 -t 60s

Users (pick with Locust's class selection, e.g. ``RerankUser`` alone):
* ``RerankUser`` — a chat backend doing best-of-n: ``/rerank`` of one prompt with 8 candidates.
* ``PairUser`` — an RL worker sending one (prompt, completion) pair per ``/score`` request.
Texts come from the preference file in ``REWARDSERVE_DATA`` (any form ``rewardserve eval`` reads), so
lengths are realistic; set ``REWARDSERVE_API_KEY`` when the server has keys. For fixed arrival rates
(open loop) use Locust's ``constant_throughput`` via ``REWARDSERVE_RPS`` (requests/s per user).
"""

from __future__ import annotations

import os
import random
from typing import Any

from locust import HttpUser, between, constant_throughput, task

from rewardmodel.sources import load_examples

_EXAMPLES = load_examples(os.environ.get("REWARDSERVE_DATA", "builtin:demo:heldout"), limit=2000)
_PAIRS = [(ex.prompt, c) for ex in _EXAMPLES for c in ex.completions]
_REPLIES = [c for _, c in _PAIRS]
_RPS = float(os.environ.get("REWARDSERVE_RPS", "0"))


def _headers() -> dict[str, str]:
    key = os.environ.get("REWARDSERVE_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


class RerankUser(HttpUser):
    """``/rerank`` with 8 candidates: the prompt's own replies plus others drawn from the data."""

    wait_time = constant_throughput(_RPS) if _RPS else between(0, 0.05)

    @task
    def rerank(self) -> None:
        example = random.choice(_EXAMPLES)
        candidates = list(example.completions) + random.sample(_REPLIES, 8 - len(example.completions))
        body: dict[str, Any] = {"prompt": example.prompt, "completions": candidates[:8]}
        with self.client.post("/rerank", json=body, headers=_headers(), catch_response=True) as response:
            if response.status_code == 200 and len(response.json()["results"]) != len(body["completions"]):
                response.failure("rerank returned a different number of results")


class PairUser(HttpUser):
    """One pair per ``/score`` request, as many small clients send."""

    wait_time = constant_throughput(_RPS) if _RPS else between(0, 0.01)

    @task
    def score(self) -> None:
        prompt, completion = random.choice(_PAIRS)
        with self.client.post("/score", json={"items": [{"prompt": prompt, "completion": completion}]},
                              headers=_headers(), catch_response=True) as response:
            if response.status_code == 200 and len(response.json()["scores"]) != 1:
                response.failure("score returned a different number of scores")
