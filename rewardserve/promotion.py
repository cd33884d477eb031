"""Promoting a round's candidate into the serving replicas: where the served bundle is, the admin swap on each
replica, the check that each answers with the new version, and ``out/current``, what a replica started later
should serve."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewardmodel import RewardModelError

if TYPE_CHECKING:
    from rewardserve.retrain import RetrainSettings


def _headers(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


def served_bundle(s: RetrainSettings) -> Path:
    """The directory of the bundle the server serves under ``s.name`` (its ``/v1/models`` entry)."""
    import httpx

    if not s.server or not s.name:
        raise RewardModelError("say what to retrain: --from DIR, or --server URL with --name NAME")
    try:
        r = httpx.get(s.server.rstrip("/") + "/v1/models", headers=_headers(s.api_key), timeout=30)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise RewardModelError(f"{s.server}: cannot read /v1/models ({exc})") from None
    for entry in r.json()["data"]:
        if entry["id"] == s.name:
            path = entry["rewardserve"].get("path")
            if path is None:
                raise RewardModelError(f"{s.name!r} is not one bundle (an ensemble or a split); pass --from DIR")
            # the bundle itself, not a link to it (a server started on out/current): the lineage and a rollback
            # must name what served, not what the link names later
            return Path(path).resolve()
    raise RewardModelError(f"{s.server} serves no model named {s.name!r}")


def replicas(s: RetrainSettings) -> list[str]:
    """The server URLs to swap: ``s.server``, or with ``all_replicas`` one per address its host name resolves to."""
    import socket
    from urllib.parse import urlsplit

    if not s.server:
        return []
    if not s.all_replicas:
        return [s.server.rstrip("/")]
    url = urlsplit(s.server)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        found = sorted({str(info[4][0]) for info in socket.getaddrinfo(url.hostname, port, type=socket.SOCK_STREAM)})
    except OSError as exc:
        raise RewardModelError(f"{s.server}: cannot resolve {url.hostname} ({exc})") from None
    return [f"{url.scheme}://{f'[{ip}]' if ':' in ip else ip}:{port}" for ip in found]


def admin_swap(s: RetrainSettings, bundle: Path, server: str | None = None) -> dict[str, Any]:
    """``PUT /admin/models/{name}`` with ``bundle`` on ``server`` (default: ``s.server``); the answer comes once the
    old version is released."""
    import httpx

    server = server or s.server
    if not server or not s.name:
        raise RewardModelError("promoting needs --server URL and --name NAME")
    try:
        r = httpx.put(f"{server.rstrip('/')}/admin/models/{s.name}", json={"path": str(bundle)},
                      headers=_headers(s.admin_key), timeout=s.swap_timeout_s)
    except httpx.HTTPError as exc:
        raise RewardModelError(f"{server}: the swap did not answer ({exc}); the round is exported, a re-run "
                               "promotes it") from None
    if r.status_code != 200:
        message = r.json().get("error", {}).get("message", r.text) if r.headers.get("content-type", "").startswith(
            "application/json") else r.text
        raise RewardModelError(f"{server}: the swap was refused ({r.status_code}: {message}); a re-run promotes "
                               "the exported round")
    return dict(r.json())


def promote(swap: Callable[[Path], dict[str, Any]] | None, candidate: Path, s: RetrainSettings,
            link: bool = True) -> dict[str, Any]:
    """Swap ``candidate`` in (on every replica), check each answers with its version, then (``link``) point
    ``out/current`` at it: what a replica started later should serve."""
    if swap is None and not replicas(s):
        raise RewardModelError("promoting needs --server URL (and --name)")
    if swap is not None:
        answer = swap(candidate)
        if s.server and s.name:
            _wait_for(s, s.server.rstrip("/"), answer["version"])
    else:
        answers = {}
        for server in replicas(s):
            answers[server] = admin_swap(s, candidate, server)
            _wait_for(s, server, answers[server]["version"])
        answer = next(iter(answers.values())) | {"replicas": sorted(answers)}
    if link:
        point_current(s.out, candidate)
    return answer


def point_current(out: Path, candidate: Path) -> None:
    """``out/current`` → ``candidate``, replaced in one rename (a reader never finds it missing)."""
    link = out / "current"
    staged = out / "current.staged"
    try:
        out.mkdir(parents=True, exist_ok=True)
        staged.unlink(missing_ok=True)
        staged.symlink_to(candidate.resolve(), target_is_directory=True)
        staged.replace(link)
    except OSError as exc:  # a read-only volume, or a directory in the link's place
        raise RewardModelError(f"{link}: cannot point it at {candidate} ({exc}); replicas started later serve the "
                               "old bundle until it does (a re-run retries)") from None


def _wait_for(s: RetrainSettings, server: str, version: str, timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r = httpx.get(server + "/v1/models", headers=_headers(s.api_key), timeout=30)
            found = {e["id"]: e.get("version") for e in r.json()["data"]}
        except (httpx.HTTPError, ValueError, KeyError) as exc:  # a replica gone after its swap: an error, not a verdict
            raise RewardModelError(f"{server}: cannot check the swap ({exc}); a re-run promotes the exported "
                                   "round") from None
        if found.get(s.name) == version:
            return
        if time.monotonic() > deadline:
            raise RewardModelError(f"{server} still answers {s.name!r} with {found.get(s.name)}, not {version}")
        time.sleep(0.5)
