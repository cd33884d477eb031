"""The serving benchmark, one command: rewardserve against the engine's ceiling, the naive server and the
peer (infinity-emb), on the same machine, model and pairs, in one run.

    python benchmarks/performance.py --data ../shared/data/hh_harmless_train.jsonl \\
        [--bundle ~/.cache/rewardserve/demo-minilm] [--models demo,bert-base] [--infinity-venv /tmp/infvenv]

Models: the demo MiniLM bundle, and a BERT-base-sized encoder (12 x 768) built from a config with random
weights and exported like any bundle (throughput does not depend on the weights). Both score items
capped at 256 tokens (the demo card's own cap is 96; the benchmark measures realistic lengths).

1. Engine ceiling: the service's own backend in process over all profile-(a) pairs, sorted by length
   and cut under the service's batch limits, the faster of two passes; pairs/s, tokens/s, and GFLOP/s
   against an fp32 matmul peak measured in the same run.
2. Servers, each a real process on loopback: `rewardserve serve` (OpenVINO int8-static, ONNX int8 and fp32;
   the int8 ones again with 2 backend streams, held to their own 2-stream ceiling), the naive server
   (benchmarks/naive_server.py: FastAPI + transformers per request), and infinity-emb (its optimum
   ONNX engine, in its own virtualenv; skipped with a note when --infinity-venv is absent).
3. Profiles: (a) 4 clients each posting 256-pair /score requests back to back; (b) /rerank of 8
   candidates, open loop at 50% and 90% of the maximum rate (measured first, closed loop); (c) 64
   clients each posting one pair.

Results: benchmarks/results/performance.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import Api, Pair, closed_loop, rerank_closed, rerank_groups, rerank_open
from machine import machine_info
from offline_throughput import forward_flops, matmul_peak_gflops
from processes import free_port, metric_sum, start_server, stop_server
from serve_load import _pairs

from rewardmodel import Formatter, load_tokenizer, pad_batch, read_card, write_card

RESULTS = Path(__file__).resolve().parent / "results"
MAX_LENGTH = 256
ENGINES = {"int8-static": "openvino", "int8": "onnx", "fp32": "onnx"}
"""The variants measured, each on the backend that serves it fastest on CPU."""
VARIANTS = tuple(ENGINES)
STREAMS = 2
STREAMED = ("int8-static", "int8")
"""The variants measured again with :data:`STREAMS` backend streams (batches scored at once), server and
ceiling, when the run has that many threads."""
CANDIDATES = 8


@dataclass(frozen=True)
class Sizes:
    """How much work each profile sends for one model (a heavier model gets fewer pairs)."""

    a_pairs: int
    c_pairs: int
    rerank_groups: int
    open_loop_s: float


SIZES = {"demo": Sizes(2048, 512, 128, 20.0), "bert-base": Sizes(512, 128, 24, 15.0)}
CEILING_PASSES = 2
"""Timed passes over the ceiling's batches; the fastest counts (a noisy pass must not flatter the ratios)."""


@dataclass
class Server:
    """A server process to measure: its command, working directory, readiness probe and API."""

    name: str
    api: Api
    command: list[str]
    probe: str
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


# ---- bundles ----------------------------------------------------------------------------------

def bench_bundle(source: Path, work: Path) -> Path:
    """A copy of the demo bundle whose card caps items at MAX_LENGTH tokens."""
    target = work / "demo-256"
    if not (target / "reward_model.json").exists():
        shutil.copytree(source, target, dirs_exist_ok=True)
        card = read_card(target, verify=False)
        write_card(target, replace(card, formatting=replace(card.formatting, max_length=MAX_LENGTH)))
    return target


def bert_base_bundle(demo: Path, work: Path) -> Path:
    """A BERT-base-sized reward model with random weights, exported to ONNX fp32, int8 and int8-static."""
    target = work / "bert-base-random"
    if (target / "reward_model.json").exists() and set(VARIANTS) <= set(read_card(target).onnx):
        return target
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from export.run import ExportSettings, export_bundle

    torch.manual_seed(0)
    small = BertConfig.from_pretrained(demo)
    config = BertConfig(vocab_size=small.vocab_size, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512, num_labels=1)  # type: ignore[call-arg]
    target.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(config).eval().save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(demo / name, target / name)
    card = read_card(demo, verify=False)
    write_card(target, replace(card, name="bert-base-random", onnx={}, normalization=None,
                               training={"note": "random weights, for throughput only"}))
    # random weights give near-equal scores, so int8's pair agreement is meaningless: export regardless
    export_bundle(target, ExportSettings(variants=VARIANTS, force=True))
    return target


def infinity_dir(bundle: Path, work: Path) -> Path:
    """The HF directory infinity-emb loads: the bundle's checkpoint, its fp32 ONNX as model.onnx, and a
    tokenizer capped at MAX_LENGTH like the served bundle."""
    target = work / f"infinity-{bundle.name}"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (target / name).exists():
            (target / name).symlink_to(bundle / name)
    if not (target / "model.onnx").exists():
        (target / "model.onnx").symlink_to(bundle / read_card(bundle).onnx["fp32"]["file"])
    tokenizer_config = json.loads((bundle / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = MAX_LENGTH
    (target / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return target


def mean_tokens(bundle: Path, pairs: list[Pair], sizes: Sizes) -> dict[str, float]:
    """Mean tokens per pair (after the cap) of what each profile sends, by profile letter: every server gets
    the same pairs under the same cap, so its tokens/s is its pairs/s times this."""
    formatter = Formatter(load_tokenizer(bundle), read_card(bundle).formatting)

    def mean(sent: list[Pair]) -> float:
        return sum(len(e.input_ids) for e in formatter.encode_many(sent)) / len(sent)

    groups = rerank_groups(pairs, CANDIDATES)[: sizes.rerank_groups]
    return {"a": mean(pairs[: sizes.a_pairs]), "c": mean(pairs[: sizes.c_pairs]),
            "b": mean([(prompt, c) for prompt, candidates in groups for c in candidates])}


# ---- the engine ceiling -------------------------------------------------------------------------

def engine_ceiling(bundle: Path, variant: str, pairs: list[Pair], threads: int, peak: float,
                   streams: int = 1, backend_name: str | None = None) -> dict[str, Any]:
    """The served backend in process (``backend_name``, else the variant's, :data:`ENGINES`), best batching: all
    pairs sorted by length, cut under the limits; with ``streams`` > 1, that many batches at once from as many
    threads."""
    from transformers import AutoConfig

    from service.backends import load_backend
    from service.batching import BatchLimits, batch_end
    from service.settings import ServiceSettings

    settings = ServiceSettings(model=bundle, variant=variant, backend=backend_name or ENGINES[variant],
                               threads=threads, streams=streams)
    card = read_card(bundle)
    formatter = Formatter(load_tokenizer(bundle), card.formatting)
    encoded = sorted(formatter.encode_many(pairs), key=lambda e: len(e.input_ids))
    lengths = [len(e.input_ids) for e in encoded]
    backend = load_backend(bundle, card, settings)
    # the scheduler's cut under the service's token and item limits, over all items at once
    limits = BatchLimits(settings.max_batch_tokens, settings.max_batch_items, max_queue_items=len(encoded),
                         pad_multiple=backend.pad_multiple)
    batches, start = [], 0
    while start < len(encoded):  # padded as the scheduler pads for this backend
        end = batch_end(lengths, start, limits)
        batches.append(pad_batch(encoded[start:end], card.formatting, backend.pad_multiple))
        start = end
    pool = ThreadPoolExecutor(streams)
    try:
        for b in batches[:: max(1, len(batches) // 4)]:
            backend.score(b)  # warm-up over the length range
        passes = []
        for _ in range(CEILING_PASSES):
            started = time.perf_counter()
            list(pool.map(backend.score, batches))  # one stream: one batch after another, as served
            passes.append(time.perf_counter() - started)
        seconds = min(passes)
    finally:
        pool.shutdown()
        backend.close()
    real = sum(lengths)
    padded = sum(b.input_ids.size for b in batches)
    config = AutoConfig.from_pretrained(bundle)
    flops = sum(forward_flops(config, b) for b in batches)
    return {"pairs_per_s": len(encoded) / seconds, "tokens_per_s": real / seconds, "padding_ratio": 1 - real / padded,
            "gflops": flops / seconds / 1e9, "fraction_of_matmul_peak": flops / seconds / 1e9 / peak,
            "mean_tokens_per_item": real / len(encoded), "batches": len(batches),
            "pass_pairs_per_s": [len(encoded) / p for p in passes]}


# ---- servers -----------------------------------------------------------------------------------

def servers(bundle: Path, work: Path, threads: int, infinity_venv: Path | None,
            baseline: Path | None = None) -> list[Server]:
    """The servers compared on one bundle (each gets a fresh port when started)."""
    def rewardserve(variant: str, tree: Path | None = None, streams: int = 1) -> Server:
        name = (f"rewardserve {ENGINES[variant]} {variant}" + (f" {streams} streams" if streams > 1 else "")
                + (f" ({tree.name}: before)" if tree else ""))
        return Server(name, Api("rewardserve"),
                      [sys.executable, "-m", "rewardserve", "serve", "--model", str(bundle), "--variant", variant,
                       *(["--backend", ENGINES[variant]] if ENGINES[variant] != "onnx" else []),
                       *(["--streams", str(streams)] if streams > 1 else []),
                       "--threads", str(threads), "--log-level", "warning", "--port", "{port}",
                       # profile (a) queues 1,024 items at once: BERT-base fp32 takes ~4 min to clear them,
                       # past the 60 s default deadline (the other servers have none)
                       "--request-timeout-s", "900"], "/readyz",
                      cwd=tree, env={"PYTHONPATH": str(tree)} if tree else {})  # cwd: -m looks there first

    out = [rewardserve(v) for v in VARIANTS]
    out += [rewardserve(v, streams=STREAMS) for v in STREAMED if threads >= STREAMS]
    if baseline:  # the same server from another checkout (`git worktree add`), for before/after figures
        out.append(rewardserve("int8", baseline))
    out.append(Server("naive (FastAPI + transformers fp32, per request)", Api("naive"),
                      [sys.executable, str(Path(__file__).parent / "naive_server.py"), "--model", str(bundle),
                       "--threads", str(threads), "--port", "{port}"], "/health"))
    if infinity_venv:
        out.append(Server("infinity-emb 0.0.78 (optimum ONNX fp32)", Api("infinity"),
                          [str(infinity_venv / "bin" / "infinity_emb"), "v2", "--model-id", ".", "--engine", "optimum",
                           "--device", "cpu", "--batch-size", "32", "--port", "{port}"], "/health",
                          cwd=infinity_dir(bundle, work),
                          env={"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}))
    return out


def start(server: Server) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``server`` on a free port; return the process and its URL once its probe answers 200."""
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in server.command]
    url = f"http://127.0.0.1:{port}"
    return start_server(command, url + server.probe, 300, server.cwd, server.env, RESULTS.parent / ".server.log"), url


def _padding(url: str) -> tuple[float, float]:
    """(sum, count) of rewardserve's batch padding ratio histogram, or zeros for other servers."""
    try:
        text = httpx.get(url + "/metrics").text
    except httpx.HTTPError:
        return 0.0, 0.0
    return (metric_sum(text, "rewardserve_batch_padding_ratio_sum"),
            metric_sum(text, "rewardserve_batch_padding_ratio_count"))


def measure(server: Server, pairs: list[Pair], sizes: Sizes) -> list[dict[str, Any]]:
    """The three profiles against one server."""
    proc, url = start(server)
    groups = rerank_groups(pairs, CANDIDATES)[: sizes.rerank_groups]
    rows: list[dict[str, Any]] = []

    def record(profile: str, outcome: Any, pairs_per_request: int, before: tuple[float, float]) -> None:
        after = _padding(url)
        batches = after[1] - before[1]
        rows.append({"server": server.name, "profile": profile, "pairs_per_request": pairs_per_request,
                     **outcome.summary(), "mean_padding_ratio": (after[0] - before[0]) / batches if batches else None})
        print(json.dumps(rows[-1]), flush=True)

    try:
        closed_loop(url, proc.pid, server.api, pairs[:64], 8, 4)  # warm the server's paths
        before = _padding(url)
        record("a: 4 clients x 256 pairs", closed_loop(url, proc.pid, server.api, pairs[: sizes.a_pairs], 256, 4),
               256, before)
        before = _padding(url)
        record("c: 64 clients x 1 pair", closed_loop(url, proc.pid, server.api, pairs[: sizes.c_pairs], 1, 64), 1,
               before)
        before = _padding(url)
        peak = rerank_closed(url, proc.pid, server.api, groups, 16)
        record("b: rerank max (16 clients, closed loop)", peak, CANDIDATES, before)
        top = peak.summary()["achieved_requests_per_s"]
        for share in (0.5, 0.9):
            before = _padding(url)
            record(f"b: rerank open loop {share:.0%} of max",
                   rerank_open(url, proc.pid, server.api, groups, share * top, sizes.open_loop_s), CANDIDATES, before)
    finally:
        stop_server(proc)
    return rows


# ---- report ------------------------------------------------------------------------------------

def report(result: dict[str, Any], name: str = "performance") -> None:
    """JSON, a Markdown table with the targets' ratios, and a latency-vs-throughput plot."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = ["# Performance: rewardserve vs the engine ceiling, the naive server and infinity-emb", "",
             f"{m['cpu']}, {m['cores']} cores, {result['threads']} threads per server; load generator on the same "
             f"machine (aiohttp). "
             f"Pairs from `{Path(result['data']).name}`, capped at {MAX_LENGTH} tokens. Versions: "
             + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), ""]
    for model, block in result["models"].items():
        lines += [f"## {model}", "", f"Measured {block['measured']}; fp32 matmul peak "
                  f"{block['matmul_peak_gflops']:.1f} GFLOP/s in the same run; mean "
                  "tokens per pair: " + ", ".join(f"({k}) {v:.0f}" for k, v in block["mean_tokens_per_pair"].items()),
                  "", "| engine ceiling | pairs/s | tokens/s | GFLOP/s | of matmul peak | padding |",
                  "|---|---|---|---|---|---|"]
        for variant, c in block["ceiling"].items():
            lines.append(f"| {variant} | {c['pairs_per_s']:.1f} | {c['tokens_per_s']:.0f} | {c['gflops']:.1f} | "
                         f"{c['fraction_of_matmul_peak']:.0%} | {c['padding_ratio']:.1%} |")
        lines += ["", "x ceiling: tokens/s over the same variant's ceiling tokens/s. x naive: pairs/s over the naive "
                  "server's on the same profile.", "",
                  "| server | profile | pairs/s | tokens/s | x ceiling | x naive | p50 ms | p95 ms | p99 ms | "
                  "padding | server cores busy | client CPU s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        naive = {r["profile"]: r["pairs_per_s"] for r in block["rows"] if r["server"].startswith("naive")}
        for r in block["rows"]:
            # the ceiling this server is held to: "rewardserve <backend> <variant>[ <n> streams][ (…)]"
            variant = r["server"].split(" (")[0].split(" ", 2)[-1]
            tokens = r["pairs_per_s"] * block["mean_tokens_per_pair"][r["profile"][0]]
            # against the ceiling in tokens/s: the profiles send different subsets of the pairs
            ceiling = (block["ceiling"][variant]["tokens_per_s"]
                       if r["server"].startswith("rewardserve") and variant in block["ceiling"] else None)
            x_ceiling = f"{tokens / ceiling:.2f}" if ceiling else ""
            x_naive = f"{r['pairs_per_s'] / naive[r['profile']]:.2f}" if r["profile"] in naive else ""
            padding = f"{r['mean_padding_ratio']:.1%}" if r["mean_padding_ratio"] is not None else ""
            lines.append(f"| {r['server']} | {r['profile']} | {r['pairs_per_s']:.1f} | {tokens:.0f} | {x_ceiling} | "
                         f"{x_naive} | {r['latency_ms_p50']:.0f} | {r['latency_ms_p95']:.0f} | "
                         f"{r['latency_ms_p99']:.0f} | {padding} | {r['server_cores_busy']:.2f} | "
                         f"{r['client_cpu_s']:.1f} |")
        lines.append("")
    lines += [n for n in result.get("notes", [])]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    _plot(result, name)
    print("\n".join(lines))


def _plot(result: dict[str, Any], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(result["models"])
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        rows = result["models"][model]["rows"]
        for server in dict.fromkeys(r["server"] for r in rows):
            mine = [r for r in rows if r["server"] == server]
            ax.plot([r["pairs_per_s"] for r in mine], [r["latency_ms_p99"] for r in mine], "o", label=server)
            rerank = [r for r in mine if r["profile"].startswith("b:")]
            ax.plot([r["pairs_per_s"] for r in rerank], [r["latency_ms_p99"] for r in rerank], "-", alpha=0.5,
                    color=ax.lines[-1].get_color())
        for variant, c in result["models"][model]["ceiling"].items():
            ax.axvline(c["pairs_per_s"], linestyle=":", color="grey")
            ax.text(c["pairs_per_s"], ax.get_ylim()[1] if ax.get_ylim()[1] > 1 else 1, f" ceiling {variant}",
                    fontsize=7, va="top", rotation=90)
        ax.set_yscale("log")
        ax.set_xlabel("pairs/s")
        ax.set_ylabel("p99 latency, ms (log)")
        ax.set_title(f"{model}: every profile, p99 vs throughput (lines: rerank 50%/90%/max)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="preference data with realistic lengths (HH harmless)")
    parser.add_argument("--bundle", type=Path, default=Path("~/.cache/rewardserve/demo-minilm").expanduser(),
                        help="the demo bundle (`rewardserve demo --no-serve` builds it)")
    parser.add_argument("--models", default="demo,bert-base")
    parser.add_argument("--servers", default="", help="comma-separated name prefixes to run (default: all)")
    parser.add_argument("--infinity-venv", type=Path, default=None,
                        help="a virtualenv with infinity-emb installed (../shared/PEERS.md)")
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="another checkout whose rewardserve runs beside this one (before/after a change)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--name", default="performance", help="results file stem in benchmarks/results/")
    parser.add_argument("--append", action="store_true",
                        help="keep the other models' blocks already in the results file (each model's block is "
                             "still measured in one run: its ceiling and servers together)")
    parser.add_argument("--work", type=Path, default=Path("~/.cache/rewardserve/bench").expanduser())
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    demo = bench_bundle(args.bundle.expanduser(), args.work)
    bundles = {"demo": demo, "bert-base": bert_base_bundle(demo, args.work)}
    peak = matmul_peak_gflops(args.threads)
    pairs_all = _pairs(args.data, max(s.a_pairs for s in SIZES.values()))
    notes = []
    if not args.infinity_venv:
        notes.append("infinity-emb not measured: pass --infinity-venv (see ../shared/PEERS.md).")
    result: dict[str, Any] = {
        "benchmark": "performance", "data": args.data, "threads": args.threads, "matmul_peak_gflops": peak,
        "machine": machine_info(("onnxruntime", "torch", "transformers", "tokenizers", "fastapi", "uvicorn",
                                 "aiohttp")),
        "models": {}, "notes": notes}
    models = args.models.split(",")
    previous = RESULTS / f"{args.name}.json"
    if args.append and previous.exists():
        kept = json.loads(previous.read_text())
        result["models"] = {m: b for m, b in kept["models"].items() if m not in models}
        notes += [n for n in kept["notes"] if not n.startswith(tuple(models))]
    for model in models:
        bundle, sizes = bundles[model], SIZES[model]
        pairs = pairs_all[: sizes.a_pairs]
        block: dict[str, Any] = {"bundle": str(bundle), "sizes": sizes.__dict__, "ceiling": {}, "rows": [],
                                 "mean_tokens_per_pair": mean_tokens(bundle, pairs, sizes), "matmul_peak_gflops": peak,
                                 "measured": time.strftime("%Y-%m-%d %H:%M")}
        for variant in VARIANTS:
            block["ceiling"][variant] = engine_ceiling(bundle, variant, pairs, args.threads, peak)
            print(model, variant, "ceiling", json.dumps(block["ceiling"][variant]), flush=True)
        for variant in STREAMED if args.threads >= STREAMS else ():
            key = f"{variant} {STREAMS} streams"
            block["ceiling"][key] = engine_ceiling(bundle, variant, pairs, args.threads, peak, STREAMS)
            print(model, key, "ceiling", json.dumps(block["ceiling"][key]), flush=True)
        # before/after figures on the demo model only: the BERT-base runs are long
        baseline = args.baseline_tree if model == "demo" else None
        for server in servers(bundle, args.work, args.threads, args.infinity_venv, baseline):
            if args.servers and not any(server.name.startswith(p) for p in args.servers.split(",")):
                continue
            try:
                block["rows"] += measure(server, pairs, sizes)
            except (RuntimeError, OSError) as exc:  # one server failing must not lose the others' figures
                notes.append(f"{model}: {server.name} failed: {exc}")
                print(notes[-1], flush=True)
        result["models"][model] = block
        report(result, args.name)


if __name__ == "__main__":
    main()
