"""The GPU benchmark's record as JSON and a short Markdown table (benchmarks/gpu.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGETS = "targets for the 8B model: ≥ 50 % MFU through the service on the RL profile, ≥ 0.9 × its in-process " \
          "ceiling, ≥ 3 × naive, scores within the parity gate"


def _cell(row: dict[str, Any] | None, key: str, fmt: str = "{:.1f}") -> str:
    if not isinstance(row, dict):
        return ""
    if "error" in row or "skipped" in row:
        return "error" if "error" in row else "skipped"
    value = row.get(key)
    return "" if value is None else fmt.format(value)


def _model_rows(name: str, m: dict[str, Any]) -> list[str]:
    rows = []
    for profile in ("rl", "grpo", "rerank", "open_50pct", "open_90pct", "naive"):
        r = m.get(profile)
        if r is None:
            continue
        rows.append(f"| {name} | {profile} | {_cell(r, 'items_per_s')} | {_cell(r, 'tokens_per_s', '{:,.0f}')} | "
                    f"{_cell(r, 'mfu_vs_datasheet', '{:.1%}')} | {_cell(r, 'mfu_vs_gemm', '{:.1%}')} | "
                    f"{_cell(r, 'latency_ms_p50', '{:,.0f}')} | {_cell(r, 'latency_ms_p99', '{:,.0f}')} |")
    for kernel, r in m.get("in_process", {}).items():
        if isinstance(r, dict) and ("items_per_s" in r or "error" in r):
            rows.append(f"| {name} | in-process {kernel} | {_cell(r, 'items_per_s')} | "
                        f"{_cell(r, 'tokens_per_s', '{:,.0f}')} | {_cell(r, 'mfu_vs_datasheet', '{:.1%}')} | "
                        f"{_cell(r, 'mfu_vs_gemm', '{:.1%}')} | | |")
    return rows


def write_report(record: dict[str, Any], out: Path, stem: str) -> None:
    """``out/stem.json`` (everything) and ``out/stem.md`` (the table and the ratios)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    machine = record["machine"]
    lines = [f"# rewardserve on {record['device']}", "",
             f"`{record['command']}`: {record['wall_s']:.0f} s. Host CPU: {machine['cpu']} ({machine['cores']} cores); "
             f"{', '.join(f'{k} {v}' for k, v in machine['versions'].items())}. Datasheet bf16 peak: "
             f"{record['datasheet_tflops'] or 'unknown'} TFLOP/s; measured GEMM: "
             f"{_cell({'v': record.get('gemm_tflops')}, 'v')} TFLOP/s. Models have random weights (the speed is the "
             "architecture's).", "",
             "| model | profile | items/s | tokens/s | MFU (datasheet) | MFU (GEMM) | p50 ms | p99 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in record["models"].items():
        lines += _model_rows(name, m)
    lines += ["", f"Ratios ({TARGETS}):", ""]
    for name, m in record["models"].items():
        runtime = (m.get("service") or {}).get("runtime") or {}
        par = m.get("parity") or {}
        gate = "passed" if par.get("passed_fp16_gate") else "not passed"
        lines.append(f"- {name}: served {runtime.get('detail', '?')}; ready in {m.get('ready_s', float('nan')):.0f} s; "
                     f"service / in-process ceiling {m.get('service_vs_ceiling', float('nan')):.2f}; "
                     f"service / naive {m.get('service_vs_naive', float('nan')):.1f}; parity max |Δ| "
                     f"{par.get('max_abs_diff', float('nan')):.3g} (gate {gate})")
        errors = [f"{k}: {v['error'][:200]}" for k, v in m.items() if isinstance(v, dict) and "error" in v]
        lines += [f"  - error in {e}" for e in errors]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
