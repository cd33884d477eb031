"""rewardserve on one GPU, measured in one prepared run of at most 8 minutes (docs/development.md, "Measuring on a
GPU").

    python3 benchmarks/gpu.py --wheelhouse .whl     # on the GPU machine (benchmarks/gpu_wheelhouse.sh made .whl)
    python3 benchmarks/gpu.py --dry-run             # anywhere: every step, tiny models on the CPU, in about a minute

For each model, largest first: a Llama-3.1-8B-architecture reward model, a Qwen2-0.5B one and a MiniLM-L6 BERT,
each built from its config with random weights directly on the GPU in bf16 (nothing downloaded):

1. ``rewardserve serve --model DIR`` on the GPU (the directory is imported on start, as a user's would be);
2. through HTTP, from a load generator on the same machine: RL-shaped ``/score`` requests of 64 items of
   512-1,024 tokens (the maximum, closed loop), the same as GRPO groups of 8 completions sharing one prompt,
   chat-shaped ``/rerank`` of 8 candidates, and RL requests arriving open-loop at 50 % and 90 % of the maximum
   (p50/p99);
3. the in-process ceiling: the same model scoring the same items in batches cut as the server cuts them, packed
   with each varlen kernel present and padded;
4. the naive baseline (``benchmarks/naive_server.py``: transformers, one request at a time);
5. parity: the served scores against CPU fp32 scores of the same weights on a few items.

Items/s, tokens/s and MFU: model FLOPs (``gpu_models.item_flops``) per second over the GPU's dense bf16 peak, read
from its name (H100 SXM 989 TFLOP/s, H100 PCIe 756, H200 989), and over a bf16 GEMM measured in the same run.
Each step is timed against ``--budget-s``; a step that would not fit is skipped and says so, and a step that fails
records its error and the run goes on. Results: ``benchmarks/results/gpu-<device>.{json,md}``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from gpu_models import (
    LLAMA_31_8B,
    MINILM_L6,
    QWEN2_05B,
    TINY_DECODER,
    TINY_ENCODER,
    Corpus,
    ModelSpec,
    build,
    item_flops,
    sentences,
    words,
)
from gpu_report import write_report
from load import Api, Outcome, Pair, closed_loop, rerank_closed, score_open
from machine import machine_info
from processes import free_port, start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200 NVL", 835.0), ("H200", 989.0))
"""Dense bf16 peaks by a device name's words, the most specific first (NVIDIA's data sheets; H100 without PCIe or
NVL in its name is the SXM part)."""


@dataclass(frozen=True)
class Profile:
    """The sizes of one run."""

    device: str
    dtype: str
    variant: str
    pack: str
    models: tuple[ModelSpec, ...]
    rl_tokens: tuple[int, int] = (512, 1024)
    per_request: int = 64
    group: int = 8
    rerank_tokens: tuple[int, int] = (128, 384)
    window_s: float = 12.0
    open_s: float = 10.0
    clients: int = 3
    rerank_clients: int = 16
    max_batch_tokens: int = 65536
    gemm: int = 8192
    ready_s: float = 420.0
    parity_items: int = 4
    naive_requests: int = 3
    ceiling_requests: int = 8
    """RL requests the in-process ceiling scores per kernel (an 8B model: about 10 s each)."""
    reserve_s: tuple[float, ...] = (120.0, 50.0, 0.0)
    """Seconds of the budget each model leaves to the ones after it."""


FULL = Profile("cuda", "bfloat16", "bf16", "auto", (ModelSpec("llama-3.1-8b", "llama", LLAMA_31_8B),
                                                      ModelSpec("qwen2-0.5b", "qwen2", QWEN2_05B),
                                                      ModelSpec("minilm-l6", "bert", MINILM_L6)))
DRY = Profile("cpu", "float32", "fp32", "on", (ModelSpec("tiny-llama", "llama", TINY_DECODER),
                                               ModelSpec("tiny-bert", "bert", TINY_ENCODER)),
              rl_tokens=(24, 48), per_request=8, group=4, rerank_tokens=(8, 24), window_s=1.0, open_s=1.0, clients=2,
              rerank_clients=2, max_batch_tokens=4096, gemm=256, ready_s=120, parity_items=3, naive_requests=2,
              ceiling_requests=4, reserve_s=(0.0, 0.0))


@dataclass
class Run:
    """The clock and the record of one run, written out after every step (a run cut short keeps its figures)."""

    budget_s: float
    save: Callable[[], None] = lambda: None
    reserve_s: float = 0.0
    """Seconds kept for the models after the current one."""
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started) - self.reserve_s

    def step(self, into: dict[str, Any], name: str, needs_s: float, fn: Callable[[], Any]) -> Any:
        """``into[name] = fn()`` if ``needs_s`` seconds are left; a skip or an error is recorded instead."""
        try:
            return self._step(into, name, needs_s, fn)
        finally:
            self.save()

    def _step(self, into: dict[str, Any], name: str, needs_s: float, fn: Callable[[], Any]) -> Any:
        if self.left() < needs_s:
            into[name] = {"skipped": f"{self.left():.0f} s of the budget left, the step needs about {needs_s:.0f}"}
            return None
        began = time.monotonic()
        try:
            into[name] = fn()
        except Exception as exc:  # one failed step must not lose the others' figures
            into[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            print(f"[gpu] {name} failed: {exc}", file=sys.stderr, flush=True)
            return None
        print(f"[gpu] {name}: {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
        return into[name]


def peak(name: str) -> float | None:
    """The dense bf16 peak of a device called ``name`` in TFLOP/s (None: not in :data:`PEAK_TFLOPS`)."""
    return next((tflops for words_, tflops in PEAK_TFLOPS if all(w in name for w in words_.split())), None)


def gemm_tflops(profile: Profile) -> float:
    """A square matrix product in the run's dtype, measured: the ceiling a model's GEMMs can reach here."""
    import torch

    n, dtype = profile.gemm, getattr(torch, profile.dtype)
    a, b = (torch.randn(n, n, device=profile.device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    _sync(profile.device)
    began = time.perf_counter()
    for _ in range(100):  # about 0.15 s on an H100: long enough for its clocks to settle
        a @ b
    _sync(profile.device)
    return 2 * n ** 3 * 100 / (time.perf_counter() - began) / 1e12


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


@dataclass(frozen=True)
class Work:
    """One model's requests: RL chunks, GRPO chunks, rerank groups, parity items."""

    rl: list[list[Pair]]
    grpo: list[list[Pair]]
    rerank: list[tuple[str, list[str]]]
    parity: list[Pair]


def work_for(directory: Path, profile: Profile, chunks: int) -> Work:
    """Requests written in the tokenizer of ``directory``: RL items of ``rl_tokens`` (a quarter of each the prompt),
    GRPO groups sharing a prompt, rerank groups."""
    from transformers import AutoTokenizer

    corpus = Corpus(AutoTokenizer.from_pretrained(directory), sentences(words(), 4000))
    rng = random.Random(0)
    lo, hi = profile.rl_tokens

    def item(tokens: int) -> Pair:
        return corpus.cut(max(4, tokens // 4), rng), " " + corpus.cut(max(4, tokens - tokens // 4), rng)

    rl = [[item(rng.randint(lo, hi)) for _ in range(profile.per_request)] for _ in range(chunks)]
    grpo = []
    for _ in range(chunks):
        chunk: list[Pair] = []
        for _ in range(profile.per_request // profile.group):
            prompt = corpus.cut(lo // 2, rng)
            chunk += [(prompt, " " + corpus.cut(rng.randint(lo // 2, hi - lo // 2), rng)) for _ in range(profile.group)]
        grpo.append(chunk)
    rerank = [(corpus.cut(48, rng), [corpus.cut(rng.randint(*profile.rerank_tokens), rng) for _ in range(8)])
              for _ in range(chunks * 8)]
    return Work(rl, grpo, rerank, [item(lo // 4) for _ in range(profile.parity_items)])


class Counter:
    """Token counts and FLOPs of items as the served bundle formats them."""

    def __init__(self, bundle: Path, facts: dict[str, Any]) -> None:
        from rewardmodel import Formatter, load_tokenizer, read_card

        self.card = read_card(bundle)
        self.formatter = Formatter(load_tokenizer(bundle), self.card.formatting)
        self.facts = facts

    def encode(self, pairs: list[Pair]) -> list[Any]:
        return self.formatter.encode_many(pairs)

    def totals(self, pairs: list[Pair]) -> tuple[int, float]:
        return self.totals_of([len(e.input_ids) for e in self.encode(pairs)])

    def totals_of(self, lengths: list[int]) -> tuple[int, float]:
        """Tokens and forward FLOPs of items of these lengths."""
        return sum(lengths), sum(item_flops(self.facts, n) for n in lengths)


def rates(outcome: Outcome, pairs: list[Pair], counter: Counter, peaks: dict[str, float | None]) -> dict[str, Any]:
    """An outcome's items/s, tokens/s and MFU against each peak (TFLOP/s)."""
    tokens, flops = counter.totals(pairs)
    out = outcome.summary()
    out.update(items_per_s=outcome.pairs / outcome.wall_s, tokens_per_s=tokens / outcome.wall_s,
               tflops=flops / outcome.wall_s / 1e12)
    out.update({f"mfu_vs_{k}": out["tflops"] / v for k, v in peaks.items() if v})
    return out


def serve(directory: Path, home: Path, profile: Profile, ready_s: float) -> tuple[subprocess.Popen[bytes], str, float]:
    """``rewardserve serve`` on the plain directory (imported on start); (process, URL, seconds to ready)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    began = time.monotonic()
    proc = start_server([sys.executable, "-m", "rewardserve", "serve", "--model", str(directory), "--port", str(port),
                         "--backend", "torch", "--device", profile.device, "--variant", profile.variant,
                         "--pack", profile.pack, "--max-batch-tokens", str(profile.max_batch_tokens),
                         "--max-batch-items", "512", "--request-timeout-s", "300", "--log-level", "warning"],
                        url + "/readyz", ready_s, cwd=ROOT, env={"REWARDSERVE_HOME": str(home)},
                        log=home / "serve.log")
    return proc, url, time.monotonic() - began


def measure_service(run: Run, out: dict[str, Any], url: str, proc: subprocess.Popen[bytes], work: Work,
                    counter: Counter, profile: Profile, peaks: dict[str, float | None]) -> dict[str, Any]:
    """The HTTP profiles against a ready server, each into ``out``; returns what the server says it runs."""
    import httpx

    api = Api("rewardserve")
    about = httpx.get(url + "/v1/models").json()["data"][0]["rewardserve"]
    flat = [p for chunk in work.rl for p in chunk]
    began = time.monotonic()
    closed_loop(url, proc.pid, api, flat[:2 * profile.per_request], profile.per_request, 1)  # warm, and a pace
    per_request = (time.monotonic() - began) / 2
    count = max(2 * profile.clients, int(profile.window_s / per_request * 1.5))
    rl = [p for chunk in work.rl[:count] for p in chunk]
    rl_out = run.step(out, "rl", profile.window_s * 2, lambda: rates(
        closed_loop(url, proc.pid, api, rl, profile.per_request, profile.clients), rl, counter, peaks))
    grpo = [p for chunk in work.grpo[:count] for p in chunk]
    run.step(out, "grpo", profile.window_s * 2, lambda: rates(
        closed_loop(url, proc.pid, api, grpo, profile.per_request, profile.clients), grpo, counter, peaks))
    # a rerank item is about a third of an RL item: twice the RL rate in items fills the window
    rl_rate = rl_out.get("items_per_s", 0.0) if isinstance(rl_out, dict) else 0.0
    groups = work.rerank[:max(profile.rerank_clients * 2, int(2 * rl_rate * profile.window_s / 8))]
    rerank_pairs = [(q, c) for q, cs in groups for c in cs]
    run.step(out, "rerank", profile.window_s * 2, lambda: rates(
        rerank_closed(url, proc.pid, api, groups, profile.rerank_clients), rerank_pairs, counter, peaks))
    def open_at(rate: float) -> dict[str, Any]:
        outcome = score_open(url, proc.pid, api, work.rl, rate, profile.open_s)
        sent = [p for k in range(len(outcome.latencies_s)) for p in work.rl[k % len(work.rl)]]
        return rates(outcome, sent, counter, peaks)

    if isinstance(rl_out, dict) and "achieved_requests_per_s" in rl_out:
        for share in (0.5, 0.9):
            run.step(out, f"open_{int(share * 100)}pct", profile.open_s * 2,
                     functools.partial(open_at, share * rl_out["achieved_requests_per_s"]))
    scored = httpx.post(url + "/score", json={"items": [{"prompt": p, "completion": c} for p, c in work.parity]},
                        timeout=300)
    out["served_parity_scores"] = scored.json()["scores"]
    return {"runtime": about["runtime"], "pace_s_per_request": per_request}


def in_process(bundle: Path, work: Work, counter: Counter, profile: Profile,
               peaks: dict[str, float | None]) -> dict[str, Any]:
    """The same items in batches cut as the server cuts them, packed with each kernel present and padded."""
    import torch

    from rewardmodel import pad_batch
    from rewardmodel.torch_model import load_torch_model, torch_scorer
    from rewardmodel.torch_packed import PackedScorer, why_not_packable
    from rewardmodel.torch_packing import KERNELS
    from service.batching import BatchLimits, batch_end

    module, card = load_torch_model(bundle, profile.device, getattr(torch, profile.dtype))
    pairs = [p for chunk in work.rl[:profile.ceiling_requests] for p in chunk]
    encoded = sorted(counter.encode(pairs), key=lambda e: len(e.input_ids))
    tokens, flops = counter.totals_of([len(e.input_ids) for e in encoded])
    results: dict[str, Any] = {"items": len(encoded), "tokens": tokens}

    def batches(packed: bool) -> list[Any]:
        limits = BatchLimits(profile.max_batch_tokens, 512, 1 << 20, max_padding=1.0 if packed else 0.1,
                             packed=packed)
        lengths, lo, out = [len(e.input_ids) for e in encoded], 0, []
        while lo < len(encoded):
            hi = batch_end(lengths, lo, limits)
            out.append(pad_batch(encoded[lo:hi], card.formatting))
            lo = hi
        return out

    def timed(score: Callable[[Any], Any], cut: list[Any]) -> dict[str, Any]:
        score(cut[0])
        _sync(profile.device)
        began = time.perf_counter()
        for batch in cut:
            score(batch)
        _sync(profile.device)
        wall = time.perf_counter() - began
        row = {"batches": len(cut), "items_per_s": len(encoded) / wall, "tokens_per_s": tokens / wall,
               "tflops": flops / wall / 1e12}
        row.update({f"mfu_vs_{k}": row["tflops"] / v for k, v in peaks.items() if v})
        return row

    why = why_not_packable(module, card.formatting.max_length)
    padded_cut = batches(False)
    if why is None:
        packed_cut = batches(True)
        for name in ["padded_sdpa", *KERNELS]:
            try:
                scorer = PackedScorer(module, name)
                with torch.inference_mode():
                    reference = module(**{k: torch.from_numpy(v).to(profile.device)
                                          for k, v in padded_cut[0].as_dict().items()})
                agree = float((scorer(padded_cut[0]).float() - reference.float()).abs().max())
                results[f"packed ({name})"] = {**timed(scorer, packed_cut), "max_diff_vs_padded": agree}
            except Exception as exc:  # a kernel this torch lacks, or one that fails on this device
                results[f"packed ({name})"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    else:
        results["packed"] = {"why_not": why}
    results["padded"] = timed(torch_scorer(module), padded_cut)
    best = max((v for v in results.values() if isinstance(v, dict) and "items_per_s" in v),
               key=lambda v: v["items_per_s"])
    results["ceiling_items_per_s"] = best["items_per_s"]
    return results


def _free(device: str) -> None:
    """Release what the finished steps held: the scoring module's hooks keep it in a reference cycle."""
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def naive(bundle: Path, work: Work, counter: Counter, profile: Profile, home: Path,
          peaks: dict[str, float | None]) -> dict[str, Any]:
    """``benchmarks/naive_server.py`` on the device, one RL request at a time."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server([sys.executable, str(ROOT / "benchmarks" / "naive_server.py"), "--model", str(bundle),
                         "--port", str(port), "--device", profile.device, "--dtype", profile.dtype],
                        url + "/health", profile.ready_s, cwd=ROOT, log=home / "naive.log")
    try:
        pairs = [p for chunk in work.rl[:profile.naive_requests + 1] for p in chunk]
        closed_loop(url, proc.pid, Api("naive"), pairs[:profile.per_request], profile.per_request, 1)  # warm
        timed = pairs[profile.per_request:]
        return rates(closed_loop(url, proc.pid, Api("naive"), timed, profile.per_request, 1), timed, counter, peaks)
    finally:
        stop_server(proc)


def parity(bundle: Path, work: Work, served: list[float]) -> dict[str, Any]:
    """Served scores against CPU fp32 scores of the same weights, gated as an fp16 export is (|Δ| ≤ 5e-2)."""
    import torch

    from rewardmodel import Formatter, load_tokenizer, pad_batch
    from rewardmodel.torch_model import load_torch_model, torch_scorer

    module, card = load_torch_model(bundle, "cpu", torch.float32)
    formatter = Formatter(load_tokenizer(bundle), card.formatting)
    reference = torch_scorer(module)(pad_batch(formatter.encode_many(work.parity), card.formatting))[:, 0]
    diff = np.abs(np.asarray(served) - reference.astype(np.float64))
    return {"items": len(served), "cpu_fp32": reference.tolist(), "served": served,
            "max_abs_diff": float(diff.max()), "max_rel_diff": float((diff / np.abs(reference).clip(1e-6)).max()),
            "passed_fp16_gate": bool(diff.max() <= 5e-2)}


def run_model(run: Run, spec: ModelSpec, profile: Profile, work_dir: Path, peaks: dict[str, float | None]
              ) -> dict[str, Any]:
    """Every step for one model."""
    out: dict[str, Any] = {"family": spec.family}
    directory, home = work_dir / spec.name, work_dir / f"{spec.name}-home"
    home.mkdir(parents=True, exist_ok=True)
    texts = sentences(words(), 3000)
    if run.step(out, "build", 30, lambda: build(spec, directory, texts, profile.device, profile.dtype)) is None:
        return out
    out["facts"] = out.pop("build")
    work = work_for(directory, profile, chunks=64)
    proc = run.step(out, "serve", 60, lambda: serve(directory, home, profile, min(profile.ready_s, run.left() - 30)))
    if proc is None:
        return out
    proc, url, ready_s = out.pop("serve")
    out["ready_s"] = ready_s
    from rewardmodel.importer import ensure_bundle

    bundle = ensure_bundle(str(directory), home)  # the server's import, found: nothing imported again
    counter = Counter(bundle, out["facts"])
    try:
        run.step(out, "service", 30, lambda: measure_service(run, out, url, proc, work, counter, profile, peaks))
    finally:
        stop_server(proc)
    run.step(out, "in_process", 30, lambda: in_process(bundle, work, counter, profile, peaks))
    _free(profile.device)  # before the naive server loads its copy
    run.step(out, "naive", 40, lambda: naive(bundle, work, counter, profile, home, peaks))
    if "served_parity_scores" in out:
        run.step(out, "parity", 20 if spec.family != "llama" or profile.device == "cpu" else 90,
                 lambda: parity(bundle, work, out.pop("served_parity_scores")))
    rl, ceiling = out.get("rl", {}), out.get("in_process", {}).get("ceiling_items_per_s")
    if "items_per_s" in rl and ceiling:
        out["service_vs_ceiling"] = rl["items_per_s"] / ceiling
    if "items_per_s" in rl and "items_per_s" in out.get("naive", {}):
        out["service_vs_naive"] = rl["items_per_s"] / out["naive"]["items_per_s"]
    return out


def install_wheels(wheelhouse: Path, site: Path) -> None:
    """The service's pure-Python dependencies the GPU image lacks (benchmarks/gpu_wheelhouse.sh), into ``site``,
    on the path of this process and of the servers it starts."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--upgrade", "--target", str(site), *map(str, sorted(wheelhouse.glob("*.whl")))], check=True)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), str(ROOT), os.environ.get("PYTHONPATH")]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU: every step, in about a minute")
    parser.add_argument("--wheelhouse", type=Path, help="install these wheels first (benchmarks/gpu_wheelhouse.sh)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/rewardserve-gpu"), help="checkpoints and imports")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--budget-s", type=float, default=450.0, help="steps that would end later are skipped")
    parser.add_argument("--models", default="", help="comma-separated names to run (default: all)")
    args = parser.parse_args()
    if args.wheelhouse:
        install_wheels(args.wheelhouse, args.work / "site")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    profile = DRY if args.dry_run else FULL
    import torch

    if profile.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --dry-run on a machine without a GPU")
    run = Run(args.budget_s)
    name = torch.cuda.get_device_name() if profile.device == "cuda" else "cpu (dry run)"
    peaks: dict[str, float | None] = {"datasheet": peak(name)}
    record: dict[str, Any] = {"device": name, "machine": machine_info(("torch", "transformers", "tokenizers",
                                                                          "numpy", "flash_attn")),
                              "command": "python3 " + " ".join(sys.argv), "profile": {
                                  k: v for k, v in profile.__dict__.items() if k != "models"},
                              "datasheet_tflops": peak(name), "models": {}}
    stem = "gpu-" + ("dry-run" if args.dry_run else "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-"))

    def save() -> None:
        record["wall_s"] = time.monotonic() - run.started
        write_report(record, args.out, stem)

    run.save = save
    gemm = run.step(record, "gemm_tflops", 5, lambda: gemm_tflops(profile))
    peaks["gemm"] = gemm if isinstance(gemm, float) else None
    wanted = set(filter(None, args.models.split(",")))
    for spec, reserve in zip(profile.models, profile.reserve_s, strict=True):
        if not wanted or spec.name in wanted:
            run.reserve_s = reserve if not wanted else 0.0
            record["models"][spec.name] = run_model(run, spec, profile, args.work, peaks)
    run.save()


if __name__ == "__main__":
    main()
