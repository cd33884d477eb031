"""``rewardserve monitor``: the reward-health figures of a running server as a live table, for people
without Grafana. It reads the server's ``/metrics`` (``rewardserve_monitor_*``, see
:mod:`service.monitors`) every ``--interval`` seconds; ``--once`` prints one table and exits.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

COLUMNS = (("items", "items", "{:.0f}"), ("reward_mean", "reward", "{:+.3f}"), ("reward_z_shift", "z-shift", "{:+.2f}"),
           ("length_spearman", "len ρ", "{:+.2f}"), ("length_mean", "len", "{:.0f}"),
           ("truncated_ratio", "trunc", "{:.1%}"), ("out_of_range_ratio", "out", "{:.1%}"),
           ("duplicate_ratio", "dup", "{:.1%}"), ("ensemble_disagreement", "ens std", "{:.2f}"))
"""(metric suffix, header, format) of each column."""


def add_monitor(sub: argparse._SubParsersAction) -> None:
    """Register ``monitor``."""
    p = sub.add_parser("monitor", help="show a server's reward-health monitors (drift, length correlation, "
                                       "duplicates, …) as a live table")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default: http://127.0.0.1:8000)")
    p.add_argument("--run-id", help="only this RL run (x-run-id); '' for traffic without one")
    p.add_argument("--window", default="5m", choices=["5m", "items"],
                   help="5m: the last 5 minutes; items: the last monitor_window_items items (default: 5m)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes (default: 5)")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.add_argument("--api-key", help="bearer key, when /metrics is protected (default: $REWARDSERVE_API_KEY)")
    p.set_defaults(func=_run)


def read_monitors(url: str, window: str, run: str | None, api_key: str | None = None
                  ) -> dict[tuple[str, str, str], dict[str, float]]:
    """(model, version, run) → {figure: value} scraped from ``url``/metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    text = httpx.get(url.rstrip("/") + "/metrics", headers=headers, timeout=10).raise_for_status().text
    rows: dict[tuple[str, str, str], dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.startswith("rewardserve_monitor_") or s.labels.get("window") != window:
                continue
            if run is not None and s.labels.get("run") != run:
                continue
            key = (s.labels["model"], s.labels["version"], s.labels["run"])
            rows.setdefault(key, {})[s.name.removeprefix("rewardserve_monitor_")] = s.value
    return rows


def table(rows: dict[tuple[str, str, str], dict[str, float]]) -> str:
    """The rows as an aligned text table."""
    header = ["model", "version", "run", *(h for _, h, _ in COLUMNS)]
    lines = [[m, v, r or "-", *(f.format(vals[k]) if k in vals else "" for k, _, f in COLUMNS)]
             for (m, v, r), vals in sorted(rows.items())]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 3 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*line) for line in [header, *lines])


def _run(args: argparse.Namespace) -> int:
    import os

    import httpx

    key = args.api_key or os.environ.get("REWARDSERVE_API_KEY")
    live = sys.stdout.isatty() and not args.once
    while True:
        try:
            rows = read_monitors(args.url, args.window, args.run_id, key)
            text = table(rows) if rows else "(no monitored traffic yet)"
        except httpx.HTTPError as exc:
            text = f"cannot read {args.url}/metrics: {exc}"
            if args.once:
                print(text, file=sys.stderr)
                return 2
        stamp = time.strftime("%H:%M:%S")
        out: Any = args.stdout
        if live:
            out.write("\033[2J\033[H")  # clear the screen: the table redraws in place
        out.write(f"rewardserve monitor {args.url} · window {args.window} · {stamp}\n{text}\n")
        out.flush()
        if args.once:
            return 0
        time.sleep(args.interval)
