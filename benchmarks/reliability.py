"""Reliability soak: fuzzing, overload at 3x capacity, client faults and SIGTERM, on a real `rewardserve serve`.

    python benchmarks/reliability.py --bundle ~/.cache/rewardserve/demo-minilm \\
        --data ../shared/data/hh_harmless_train.jsonl

Phases, each against a fresh server process:
1. **fuzz**: schemathesis (CLI) generates valid and invalid requests for every operation of the served
   OpenAPI schema; the server's own /metrics count what was tried and answered, by status class.
2. **overload**: capacity is measured closed-loop, then requests arrive open-loop at 3x that rate for
   ``--burst-s`` seconds. Reports offered/shed/served, answered/accepted, /healthz latency during the
   burst, the server's peak memory (VmHWM) before and after, and how long after the burst a request's
   latency is back within 2x of the idle latency.
3. **faults**: clients that give up mid-request beside a well-behaved client; then SIGTERM with work
   queued: every accepted request must be answered and the exit status must be 0.
Results: benchmarks/results/reliability.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info
from processes import free_port, start_server

from rewardmodel.sources import load_examples

RESULTS = Path(__file__).resolve().parent / "results"


class Server:
    """A `rewardserve serve` process on a free port."""

    def __init__(self, bundle: Path, *flags: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = start_server([sys.executable, "-m", "rewardserve", "serve", "--model", str(bundle), "--port",
                                  str(port), "--log-level", "warning", *flags], self.url + "/readyz")

    def memory_mb(self, field: str = "VmHWM") -> float:
        """Peak (VmHWM) or current (VmRSS) resident memory of the server process."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    def counts(self, by_endpoint: bool = False) -> dict[str, float]:
        """requests_total by status code (and endpoint), from the server's /metrics."""
        out: dict[str, float] = {}
        for line in httpx.get(self.url + "/metrics").text.splitlines():
            if line.startswith("rewardserve_requests_total{"):
                key = line.split('code="')[1].split('"')[0]
                if by_endpoint:
                    key += " " + line.split('endpoint="')[1].split('"')[0]
                out[key] = out.get(key, 0) + float(line.split()[-1])
        return out

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)


def fuzz(bundle: Path, examples: int) -> dict[str, Any]:
    server = Server(bundle, "--max-items-per-request", "16")
    before = server.counts(by_endpoint=True)  # the readiness polling's 503s while the model loaded
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = subprocess.run(["schemathesis", "run", server.url + "/openapi.json", "--mode", "all",
                                  "--max-examples", str(examples), "--checks",
                                  "not_a_server_error,status_code_conformance,content_type_conformance,"
                                  "response_schema_conformance", "--report", "junit", "--report-dir", tmp],
                                 capture_output=True, text=True, timeout=1800)
        detail = {k: v - before.get(k, 0) for k, v in server.counts(by_endpoint=True).items()}
    finally:
        server.stop()
    counts: dict[str, float] = {}
    for key, n in detail.items():
        counts[key.split()[0]] = counts.get(key.split()[0], 0) + n
    by_class: dict[str, float] = {}
    for code, n in counts.items():
        by_class[code[0] + "xx"] = by_class.get(code[0] + "xx", 0) + n
    return {"schemathesis_exit": run.returncode, "requests_by_status": counts, "requests_by_class": by_class,
            "requests": sum(counts.values()), "status_5xx": {k: v for k, v in detail.items() if k[0] == "5" and v},
            "summary": run.stdout.strip().splitlines()[-3:]}


async def _post(client: httpx.AsyncClient, items: list[dict[str, Any]]) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        r = await client.post("/score", json={"items": items})
        return r.status_code, time.perf_counter() - started
    except httpx.HTTPError as exc:
        return -1 if not isinstance(exc, httpx.TimeoutException) else -2, time.perf_counter() - started


async def overload(bundle: Path, pairs: list[dict[str, Any]], per_request: int, burst_s: float,
                   factor: float) -> dict[str, Any]:
    server = Server(bundle, "--variant", "int8", "--max-queue-items", "512", "--request-timeout-s", "30")
    chunks = [pairs[i:i + per_request] for i in range(0, len(pairs) - per_request + 1, per_request)]
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60,
                                     limits=httpx.Limits(max_connections=2000, max_keepalive_connections=200)) as c:
            idle = [(await _post(c, chunks[0][:1]))[1] for _ in range(20)]
            idle_latency = float(np.median(idle))
            started, done = time.perf_counter(), 0
            while time.perf_counter() - started < 10:  # capacity, closed loop with 8 requests in flight
                await asyncio.gather(*(_post(c, chunks[(done + k) % len(chunks)]) for k in range(8)))
                done += 8
            capacity = done * per_request / (time.perf_counter() - started)
            memory_before = server.memory_mb("VmRSS")
            rate = factor * capacity / per_request  # requests per second
            tasks: list[asyncio.Task[tuple[int, float]]] = []
            health: list[float] = []

            async def probe() -> None:
                while True:
                    t = time.perf_counter()
                    await c.get("/healthz")
                    health.append(time.perf_counter() - t)
                    await asyncio.sleep(0.1)

            prober = asyncio.create_task(probe())
            started = time.perf_counter()
            k = 0
            while (now := time.perf_counter()) - started < burst_s:
                while k < (now - started) * rate:
                    tasks.append(asyncio.create_task(_post(c, chunks[k % len(chunks)])))
                    k += 1
                await asyncio.sleep(0.002)
            offered_s = time.perf_counter() - started
            results = await asyncio.gather(*tasks)
            burst_end = time.perf_counter()
            prober.cancel()
            recovery = None
            while recovery is None and time.perf_counter() - burst_end < 60:
                status, latency = await _post(c, chunks[0][:1])
                if status == 200 and latency < 2 * idle_latency:
                    recovery = time.perf_counter() - burst_end
            codes = [s for s, _ in results]
            served_latency = [lat for s, lat in results if s == 200]
        peak_rss = server.memory_mb()
        exit_code = server.stop()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    accepted = sum(1 for s in codes if s != 429)
    return {
        "capacity_items_per_s": capacity, "offered_factor": factor, "items_per_request": per_request,
        "offered_requests": len(codes), "offered_rate_rps": len(codes) / offered_s, "target_rate_rps": rate,
        "served_200": codes.count(200), "shed_429": codes.count(429),
        "other": {str(s): codes.count(s) for s in set(codes) - {200, 429}},
        "answered_over_accepted": codes.count(200) / max(accepted, 1),
        "served_items_per_s_during_burst": codes.count(200) * per_request / (burst_end - started),
        "served_latency_ms_p50": float(np.percentile(served_latency, 50) * 1000) if served_latency else None,
        "served_latency_ms_p99": float(np.percentile(served_latency, 99) * 1000) if served_latency else None,
        "healthz_ms_p50": float(np.percentile(health, 50) * 1000), "healthz_ms_max": float(max(health) * 1000),
        "idle_latency_ms": idle_latency * 1000, "recovery_s": recovery,
        "rss_mb_before_burst": memory_before, "peak_rss_mb": peak_rss, "exit_code": exit_code,
    }


async def faults(bundle: Path, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    server = Server(bundle, "--variant", "int8")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as good, \
                httpx.AsyncClient(base_url=server.url, timeout=0.05) as impatient:
            gone = [asyncio.create_task(_post(impatient, pairs[i:i + 16])) for i in range(0, 800, 16)]
            kept = [asyncio.create_task(_post(good, pairs[i:i + 16])) for i in range(800, 1600, 16)]
            gone_codes = [s for s, _ in await asyncio.gather(*gone)]
            kept_codes = [s for s, _ in await asyncio.gather(*kept)]
        await asyncio.sleep(1.0)
        counts = server.counts()
    finally:
        server.stop()
    # SIGTERM with work queued: a long max_wait keeps items waiting at the moment of the signal
    drain = Server(bundle, "--variant", "int8", "--max-wait-ms", "1000")
    async with httpx.AsyncClient(base_url=drain.url, timeout=60) as c:
        inflight = [asyncio.create_task(_post(c, pairs[i:i + 8])) for i in range(0, 64, 8)]
        await asyncio.sleep(0.3)
        drain.proc.send_signal(signal.SIGTERM)
        drained = [s for s, _ in await asyncio.gather(*inflight)]
    return {"disconnecting_requests": len(gone_codes), "client_timeouts": gone_codes.count(-2),
            "server_saw_499": counts.get("499", 0), "well_behaved_requests": len(kept_codes),
            "well_behaved_200": kept_codes.count(200), "sigterm_accepted": len(drained),
            "sigterm_answered_200": drained.count(200), "sigterm_exit_code": drain.proc.wait(60)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--fuzz-examples", type=int, default=200)
    parser.add_argument("--burst-s", type=float, default=30.0)
    parser.add_argument("--factor", type=float, default=3.0)
    args = parser.parse_args()
    examples = load_examples(args.data, limit=1000)
    pairs = [{"prompt": ex.prompt, "completion": c} for ex in examples for c in ex.completions]
    report: dict[str, Any] = {"benchmark": "reliability", "bundle": str(args.bundle), "data": args.data,
                              "machine": machine_info(("onnxruntime", "fastapi", "uvicorn", "schemathesis", "httpx"))}
    report["fuzz"] = fuzz(args.bundle, args.fuzz_examples)
    print(json.dumps(report["fuzz"]), flush=True)
    report["overload"] = asyncio.run(overload(args.bundle, pairs, 16, args.burst_s, args.factor))
    print(json.dumps(report["overload"]), flush=True)
    report["faults"] = asyncio.run(faults(args.bundle, pairs))
    print(json.dumps(report["faults"]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reliability.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "reliability.md").write_text(render(report))
    print(render(report))


def render(report: dict[str, Any]) -> str:
    """The Markdown summary of a report."""
    f, o, t = report["fuzz"], report["overload"], report["faults"]
    recovery = "not within 60 s" if o["recovery_s"] is None else f"in {o['recovery_s']:.2f} s"
    lines = [f"# Reliability ({report['machine']['cpu']}, {report['machine']['cores']} cores)", "",
             "| phase | result |", "|---|---|",
             f"| fuzz (schemathesis, valid + invalid) | {f['requests']:.0f} requests: {f['requests_by_class']}; "
             f"5xx: {f['status_5xx'] or 'none'}; schemathesis exit {f['schemathesis_exit']} |",
             f"| overload {o['offered_factor']}x | capacity {o['capacity_items_per_s']:.0f} items/s; offered "
             f"{o['offered_requests']} requests of {o['items_per_request']} items at {o['offered_rate_rps']:.1f}/s; "
             f"served {o['served_200']}, shed 429 {o['shed_429']}, other {o['other'] or 'none'}; answered/accepted "
             f"{o['answered_over_accepted']:.3f}; {o['served_items_per_s_during_burst']:.0f} items/s served during "
             f"the burst; served latency p50 {o['served_latency_ms_p50']:.0f} ms, p99 {o['served_latency_ms_p99']:.0f}"
             f" ms |",
             f"| overload: health, memory, recovery | /healthz p50 {o['healthz_ms_p50']:.1f} ms, max "
             f"{o['healthz_ms_max']:.0f} ms; RSS {o['rss_mb_before_burst']:.0f} MB before, peak "
             f"{o['peak_rss_mb']:.0f} MB; latency back within 2x idle {recovery}; exit {o['exit_code']} |",
             f"| clients giving up after 50 ms | {t['disconnecting_requests']} requests, {t['server_saw_499']:.0f} "
             f"seen as 499; {t['well_behaved_200']}/{t['well_behaved_requests']} concurrent well-behaved requests "
             "answered 200 |",
             f"| SIGTERM with work queued | {t['sigterm_answered_200']}/{t['sigterm_accepted']} answered 200, exit "
             f"{t['sigterm_exit_code']} |"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
