"""The performance benchmark's naive baseline: what a user writes first — FastAPI calling the transformers model once
per request, no batching, no length sorting, tokenization on the event loop.

    python benchmarks/naive_server.py --model ~/.cache/rewardserve/demo-minilm --port 8001
    python benchmarks/naive_server.py --model BUNDLE --device cuda --dtype bfloat16   # on a GPU

It answers ``POST /score`` with the same body and scores as rewardserve (it uses the bundle's formatting,
so the comparison is about serving, not about numbers), and ``GET /health``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI

from rewardmodel import Formatter, load_tokenizer, pad_batch
from rewardmodel.torch_model import load_torch_model, torch_scorer


def build(model_dir: str, threads: int, device: str = "cpu", dtype: str = "float32") -> FastAPI:
    torch.set_num_threads(threads)
    model, card = load_torch_model(model_dir, device, getattr(torch, dtype))
    formatter = Formatter(load_tokenizer(model_dir), card.formatting)
    score = torch_scorer(model)
    app = FastAPI()

    @app.post("/score")
    def score_items(body: dict[str, Any]) -> dict[str, Any]:  # sync: FastAPI runs it on its thread pool
        items = [(it["prompt"], it["completion"]) for it in body["items"]]
        out = score(pad_batch(formatter.encode_many(items), card.formatting))
        return {"scores": [float(x) for x in out[:, 0]]}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()
    uvicorn.run(build(args.model, args.threads, args.device, args.dtype), host="127.0.0.1", port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
