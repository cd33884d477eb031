"""Imported reward models beside native bundles, and the time to ready of a ~1B model (benchmarks/imported.py).

    python benchmarks/imported.py --data ../shared/data/hh_harmless_train.jsonl

Speed: one decoder checkpoint (Llama architecture built from a config, random weights; a tokenizer trained on the
data) served by real ``rewardserve serve`` processes on the torch backend, two ways: as a native bundle (the
classifier head ``rewardserve train`` writes: the model's own forward, which reads the last non-pad token) and
imported (``--model DIR`` on the plain directory: imported on start, the head read at explicit positions).
Closed-loop clients post 8-item ``/score`` requests of HH pairs; the two servers alternate over ``--rounds``.

Time to ready: a TinyLlama-1.1B-shaped reward model built from a config and saved as safetensors, served with
``rewardserve serve --model DIR``: seconds from the process start to ``/readyz``, the first time (the import:
load, proof on the probes, hashing, hard links; then the load and warm-up to serve) and again (the import
found in ``$REWARDSERVE_HOME``, its hashes remembered: no proof, no hashing).

Results: benchmarks/results/imported.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import machine_info
from processes import free_port, start_server, stop_server

from rewardmodel import BundleCard, HeadSpec, read_card, write_card
from rewardmodel.importer import ensure_bundle, import_model
from rewardmodel.sources import load_examples

RESULTS = Path(__file__).resolve().parent / "results"
SPEED_SHAPE: dict[str, Any] = {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 6,
                               "num_attention_heads": 8, "num_key_value_heads": 8, "max_position_embeddings": 512}
TINYLLAMA_SHAPE: dict[str, Any] = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                                   "num_attention_heads": 32, "num_key_value_heads": 4,
                                   "max_position_embeddings": 2048, "vocab_size": 32000}
CHAT = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
        "{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
        "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


def llama3_tokenizer(texts: list[str], vocab_size: int = 4000) -> Any:
    """A Llama-3-style byte-level BPE tokenizer trained on ``texts``: its chat template writes a BOS and the tokenizer
    adds one (the import keeps one); ``<|pad|>`` pads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|pad|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                       show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[
        ("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|pad|>")
    fast.chat_template = CHAT
    return fast


def checkpoint(out: Path, shape: dict[str, Any], texts: list[str]) -> Path:
    """A Llama sequence classifier built from ``shape`` (random weights) with :func:`llama3_tokenizer`."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    fast = llama3_tokenizer(texts)
    config = LlamaConfig(**{"vocab_size": len(fast), **shape}, pad_token_id=fast.pad_token_id,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=False)
    config.num_labels = 1
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(out)
    fast.save_pretrained(out)
    return out


def native(imported: Path, out: Path) -> Path:
    """The same weights as a bundle of ``rewardserve train``'s kind: the classifier head, the model reading its own
    position (the pad token is the config's, never in real input)."""
    shutil.copytree(imported, out)
    card = read_card(imported)
    write_card(out, BundleCard(name="native", base_model=card.base_model, architecture="decoder",
                               model_type=card.model_type, formatting=replace(card.formatting, read="model"),
                               head=HeadSpec()))
    return out


async def load(url: str, pool: list[dict[str, Any]], clients: int, seconds: float) -> dict[str, float]:
    """Closed-loop clients of 8-item /score requests for ``seconds``: items/s and latency."""
    done: list[float] = []
    stop = time.monotonic() + seconds

    async def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        async with httpx.AsyncClient(timeout=300) as http:
            while time.monotonic() < stop:
                sent = time.monotonic()
                r = await http.post(url + "/score", json={"items": [pool[i] for i in rng.integers(0, len(pool), 8)]})
                assert r.status_code == 200, r.text
                done.append(time.monotonic() - sent)

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.monotonic() - started
    return {"items_per_s": 8 * len(done) / elapsed, "p50_ms": float(np.percentile(done, 50) * 1000),
            "requests": len(done)}


def serve(model: str, home: Path, extra: list[str] | None = None, seconds: float = 1800) -> tuple[Any, str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    proc = start_server([sys.executable, "-m", "rewardserve", "serve", "--model", model, "--port", str(port),
                         "--log-level", "warning", "--backend", "torch", *(extra or [])], url + "/readyz", seconds,
                        env={"REWARDSERVE_HOME": str(home)})
    return proc, url, time.monotonic() - started


def speed(data: str, root: Path, rounds: int, clients: int, seconds: float, max_tokens: int) -> dict[str, Any]:
    examples = load_examples(data, limit=600)
    texts = [str(ex.prompt) + c for ex in examples for c in ex.completions]
    plain = checkpoint(root / "speed-plain", SPEED_SHAPE, texts)
    imported = root / "speed-imported"
    import_model(str(plain), imported)
    ensure_bundle(str(plain), root / "home")  # as a first start would: every round below is a later start
    bundles = {"native bundle (classifier head)": str(native(imported, root / "speed-native")),
               "imported (linear head at positions)": str(plain)}
    pool = [{"prompt": ex.prompt, "completion": c} for ex in examples[:256] for c in ex.completions]
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in bundles}
    for _ in range(rounds):
        for name, model in bundles.items():
            proc, url, _ = serve(model, root / "home", ["--max-item-tokens", str(max_tokens)])
            try:
                asyncio.run(load(url, pool, clients, 3))  # warm
                runs[name].append(asyncio.run(load(url, pool, clients, seconds)))
            finally:
                stop_server(proc)
    rates = {k: [r["items_per_s"] for r in v] for k, v in runs.items()}
    names = list(bundles)
    return {"shape": SPEED_SHAPE, "params": params(plain), "max_item_tokens": max_tokens, "clients": clients,
            "round_s": seconds, "runs": runs,
            "ratio": float(np.mean(rates[names[1]]) / np.mean(rates[names[0]])),
            "in_process": in_process({"native bundle (classifier head)": root / "speed-native",
                                      "imported (linear head at positions)": imported},
                                     [(x["prompt"], str(x["completion"])) for x in pool], max_tokens, rounds)}


def in_process(bundles: dict[str, Path], pairs: list[tuple[Any, str]], max_tokens: int, rounds: int
               ) -> dict[str, Any]:
    """The two bundles' torch scorers on the same pairs (cut to ``max_tokens``), length-sorted batches of 16,
    alternating passes: items/s of each pass, free of HTTP and of the load generator."""
    from rewardmodel import Formatter, load_tokenizer, pad_batch
    from rewardmodel.scoring import outputs_encoded
    from rewardmodel.torch_model import load_torch_model, torch_scorer

    prepared = {}
    for name, bundle in bundles.items():
        card = read_card(bundle)
        spec = replace(card.formatting, max_length=max_tokens)
        model, _ = load_torch_model(bundle, card=card)
        prepared[name] = (torch_scorer(model), spec, Formatter(load_tokenizer(bundle), spec).encode_many(pairs))
    passes: dict[str, list[float]] = {name: [] for name in bundles}
    names = list(bundles)
    for k in range(rounds + 1):  # the first pass warms up; the order alternates
        for name in names if k % 2 == 0 else names[::-1]:
            scorer, spec, encoded = prepared[name]
            started = time.perf_counter()
            outputs_encoded(scorer, spec, encoded, batch_size=16)
            passes[name].append(len(encoded) / (time.perf_counter() - started))
    # one batch, the 16 longest items, forward alone: 40 interleaved runs each, the median past the first 4
    batch: dict[str, list[float]] = {name: [] for name in names}
    for k in range(44):
        for name in names if k % 2 == 0 else names[::-1]:
            scorer, spec, encoded = prepared[name]
            longest = pad_batch(sorted(encoded, key=lambda e: len(e.input_ids))[-16:], spec)
            started = time.perf_counter()
            scorer(longest)
            batch[name].append(time.perf_counter() - started)
    medians = {name: float(np.median(v[4:])) for name, v in batch.items()}
    return {"items": len(pairs), "passes": {k: v[1:] for k, v in passes.items()},
            "ratio": float(np.mean(passes[names[1]][1:]) / np.mean(passes[names[0]][1:])),
            "longest_batch_s": medians, "batch_ratio": medians[names[0]] / medians[names[1]]}


def params(directory: Path) -> int:
    from safetensors import safe_open

    total = 0
    for path in directory.glob("*.safetensors"):
        with safe_open(str(path), "pt") as fh:
            total += sum(int(np.prod(fh.get_slice(k).get_shape())) for k in fh.keys())
    return total


def ready(data: str, root: Path, max_tokens: int) -> dict[str, Any]:
    examples = load_examples(data, limit=300)
    texts = [str(ex.prompt) + c for ex in examples for c in ex.completions]
    started = time.monotonic()
    plain = checkpoint(root / "tinyllama-rm", TINYLLAMA_SHAPE, texts)
    built_s = time.monotonic() - started
    home = root / "ready-home"
    out: dict[str, Any] = {"shape": TINYLLAMA_SHAPE, "params": params(plain), "built_s": built_s,
                           "weights_bytes": sum(p.stat().st_size for p in plain.glob("*.safetensors")),
                           "max_item_tokens": max_tokens}
    for start in ("first start (imports)", "second start (cached)"):
        proc, _, seconds = serve(str(plain), home, ["--max-item-tokens", str(max_tokens),
                                                    "--max-batch-tokens", str(4 * max_tokens)])
        stop_server(proc)
        out[start] = seconds
    return out


def write(result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "imported.json").write_text(json.dumps(result, indent=2) + "\n")
    m, s, r = result["machine"], result["speed"], result["ready"]
    lines = ["# Imported reward models (benchmarks/imported.py)", "", f"`{result['command']}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; {m['os']}; "
             + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
             f"## Served speed: one checkpoint, native against imported ({s['params'] / 1e6:.0f}M parameters)", "",
             f"torch fp32, {s['clients']} clients × 8 HH items, items cut to {s['max_item_tokens']} tokens, "
             f"{s['round_s']:g} s per round, servers alternating.", "",
             "| served as | items/s per round | mean |", "|---|---|---:|"]
    for name, runs in s["runs"].items():
        rates = [x["items_per_s"] for x in runs]
        lines.append(f"| {name} | {', '.join(f'{x:.1f}' for x in rates)} | {np.mean(rates):.1f} |")
    p = s["in_process"]
    lines += ["", f"imported / native, served: **{s['ratio']:.2f}**", "",
              f"In process (no HTTP, no load generator): the same {p['items']} items, length-sorted batches of 16, "
              "alternating passes.", "", "| | items/s per pass | mean |", "|---|---|---:|"]
    for name, rates in p["passes"].items():
        lines.append(f"| {name} | {', '.join(f'{x:.1f}' for x in rates)} | {np.mean(rates):.1f} |")
    times = ", ".join(f"{n} {t * 1000:.0f} ms" for n, t in p["longest_batch_s"].items())
    lines += ["", f"imported / native, in process: **{p['ratio']:.2f}**", "",
              f"One batch (the 16 longest items), the forward alone, median of 40 interleaved runs: {times}; "
              f"imported / native speed **{p['batch_ratio']:.2f}**.", "",
              f"## Time to ready: a {r['params'] / 1e9:.2f}B-parameter Llama reward model "
              f"({r['weights_bytes'] / 2**30:.1f} GiB of fp32 safetensors)", "",
              f"`rewardserve serve --model DIR --backend torch --max-item-tokens {r['max_item_tokens']}`, process "
              "start to /readyz (built from a config in "
              f"{r['built_s']:.0f} s, not counted).", "", "| start | seconds |", "|---|---:|",
              "| first: import (load, proof, hashes, links), then load and warm up | "
              f"{r['first start (imports)']:.1f} |",
              f"| second: the import cached, its hashes remembered | {r['second start (cached)']:.1f} |", ""]
    (RESULTS / "imported.md").write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-item-tokens", type=int, default=256)
    p.add_argument("--skip-ready", action="store_true", help="speed only (no 1B model)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rewardserve-imported-") as tmp:
        root = Path(tmp)
        result = {"command": "python " + " ".join(sys.argv),
                  "machine": machine_info(("torch", "transformers", "tokenizers", "safetensors")),
                  "speed": speed(args.data, root, args.rounds, args.clients, args.seconds, args.max_item_tokens)}
        result["ready"] = {} if args.skip_ready else ready(args.data, root, args.max_item_tokens)
    if result["ready"]:
        write(result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
