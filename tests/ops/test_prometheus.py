"""Metrics, alert rules and the dashboard against the real tools: promtool on the live /metrics and on
the rules, then a real Prometheus scraping the service under load, queried with every PromQL
expression the dashboard, the alerts and the autoscalers use; each must return data."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import free_port, user_rows
from tests.ops.conftest import K8S
from tests.server import Running, running

ALERTS = K8S / "prometheus" / "alerts.yaml"
# the labels the Prometheus Operator's ServiceMonitor attaches in a cluster
TARGET_LABELS = {"namespace": "rewardserve", "pod": "rewardserve-7d9c-abcde"}
# Grafana's variables with every value selected, and a rate window that spans the whole test
GRAFANA_VARIABLES = {"$pod": ".*", "$model": ".*", "$__rate_interval": "1m"}


def test_rules_check_and_unit_tests_pass(tool: Callable[..., str]) -> None:
    promtool = tool("promtool")
    for command in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts.test.yaml"]):
        result = subprocess.run([promtool, *command], cwd=ALERTS.parent, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


NEUTRAL = ["it", "is", "a", "the", "three", "four", "cat", "tea"]


def lengthy_completion(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(NEUTRAL, k=words)) + " ."


@pytest.fixture(scope="module")
def length_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    """A reward model that learned "longer is better" (every chosen reply is the longer one): what a policy
    can game by writing more. Its reward rises with length without saturating at one value."""
    from tests.conftest import _export, _train_quick

    root = tmp_path_factory.mktemp("lengthy")
    rng = random.Random(3)
    files = (root / "train.jsonl", root / "heldout.jsonl")
    for path, n in zip(files, (256, 64), strict=True):
        rows = []
        for _ in range(n):
            short, long = sorted(rng.sample(range(1, 11), 2))
            rows.append({"prompt": "how are you ?", "chosen": lengthy_completion(rng, long),
                         "rejected": lengthy_completion(rng, short)})
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trained = _train_quick(tiny_bert, files, root / "trained")
    return _export(trained, root / "served", files, ("fp32",))


def _personalized(bundle: Path, work: Path) -> Path:
    """A copy of ``bundle`` with basis heads for personal rewards."""
    from training.personalize import personalize_bundle

    target = work / "personal"
    shutil.copytree(bundle, target)
    data = work / "users.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in user_rows(4, 20)))
    personalize_bundle(target, str(data), 4, progress=False)
    return target


PARENT_VERSION = "0123456789ab"
"""The version the recorded promotion replaced (the retraining loop's series: see :func:`_record_rounds`)."""


def _served_version(url: str, name: str) -> str:
    """The version a server serves under ``name`` (its /v1/models entry), as ``rewardserve retrain`` reads it."""
    return next(e["version"] for e in httpx.get(url + "/v1/models").json()["data"] if e["id"] == name)


def _record_rounds(db: Path, live: Running, bundle: Path) -> None:
    """Two rounds of the retraining loop in the store, as ``rewardserve retrain`` records them: a skipped one, then
    the promotion of what the server serves now, which replaced :data:`PARENT_VERSION`. The server exports them
    (``rewardserve_retrain_*``) for the dashboard's Retraining row and the loop's alerts."""
    from datetime import timedelta

    from feedback.events import utc_now
    from feedback.rounds import Round, record_round
    from feedback.store import FeedbackStore

    name = live.state.default.name
    store = FeedbackStore(str(db), pool_size=1)  # the server's, which it may not have written to yet
    try:
        record_round(store, Round(name, 1, "skipped", utc_now() - timedelta(days=1), parent_path=str(bundle),
                                  report={"reason": "12 new judgements since the base's data; --min-new is 300"}))
        record_round(store, Round(name, 1, "promoted", utc_now(), _served_version(live.url, name), PARENT_VERSION,
                                  str(bundle), str(bundle), 0.75, {"reason": "the candidate passed the gate"}))
    finally:
        store.close()


@pytest.fixture(scope="module")
def loaded(bert_onnx_bundle: Path, length_bundle: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Running]:
    """The service, with a background load of good and bad requests running, and feedback coming in; it serves
    several models (a shadowed default, a split, an ensemble), so that every per-model panel has data. Its feedback
    store records a promotion of the default model, so the retraining loop's series exist too."""
    work = tmp_path_factory.mktemp("feedback")
    db = work / "feedback.db"
    models = work / "models.yaml"
    mine = _personalized(bert_onnx_bundle, work)
    models.write_text(yaml.safe_dump({"models": [
        {"name": "rm", "path": str(bert_onnx_bundle), "shadow": "rm-int8"},
        {"name": "rm-int8", "path": str(bert_onnx_bundle), "variant": "int8"},
        {"name": "chat", "split": {"rm": 1, "rm-int8": 1}},
        {"name": "ens", "members": [str(bert_onnx_bundle), str(bert_onnx_bundle)], "aggregate": "min"},
        {"name": "lengthy", "path": str(length_bundle)},
        {"name": "mine", "path": str(mine)}]}))
    with running(models_file=models, max_items_per_request=16, feedback_db=str(db)) as live:
        _record_rounds(db, live, bert_onnx_bundle)  # before the first scrape, which reads the record
        stop = threading.Event()

        def load() -> None:
            rng = random.Random(0)
            with httpx.Client(base_url=live.url, timeout=30) as client:
                k = 0
                while not stop.is_set():
                    k += 1
                    items = [{"prompt": f"question {k}?", "completion": " good answer" * (1 + i % 5)} for i in range(8)]
                    client.post("/score", json={"items": items})
                    candidates = [" good", " bad", " good good"]
                    reranked = client.post("/rerank", json={"prompt": "q?", "completions": candidates})
                    client.post("/rerank", json={"prompt": "q?", "completions": candidates, "model": "chat"},
                                headers={"x-session-id": f"s{k}"})
                    client.post("/score", json={"items": items, "model": "ens"})
                    # a user's personal reward: the population's until their judgements below are refitted
                    client.post("/score", json={"items": items, "model": "mine", "user": "u1"})
                    # an RL run whose policy has learned to write long (7-10 words) against a reward model that
                    # pays for length, beside a steady run of every length (the monitors must tell them apart)
                    for run, lengths in (("gaming", range(7, 11)), ("steady", range(1, 11))):
                        stream = [{"prompt": "how are you ?", "completion": lengthy_completion(rng, n)}
                                  for n in lengths]
                        client.post("/score", json={"items": stream, "model": "lengthy"}, headers={"x-run-id": run})
                    assert reranked.status_code == 200, reranked.text  # the load must exercise /rerank for real
                    client.post("/score", json={"items": []})  # 400/422: a client mistake
                    client.post("/score", json={"items": items * 3})  # 413: over max_items_per_request
                    scores = reranked.json()["results"]
                    # as chat backends send it: the scores, and the version that gave them (name@x-model-version)
                    scored_by = f"{live.state.default.name}@{reranked.headers['x-model-version']}"
                    judged = {"id": f"load-{k}", "prompt": "q?", "completions": candidates, "choice": 0,
                              "scores": [next(r["score"] for r in scores if r["index"] == i) for i in range(3)],
                              "reward_model": scored_by, "metadata": {"user": "u1"}}
                    assert client.post("/feedback", json={"events": [judged]}).status_code == 200
                    time.sleep(0.05)

        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        try:
            yield live
        finally:
            stop.set()
            thread.join(30)


def test_live_metrics_pass_promtool(loaded: Running, tool: Callable[..., str]) -> None:
    promtool = tool("promtool")
    name = loaded.state.default.name
    judged_as = f"{name}@{_served_version(loaded.url, name)}"
    deadline = time.monotonic() + 30  # until requests of every kind have been counted
    while loaded.metric("rewardserve_requests_total", endpoint="/rerank", code="200") < 1 or \
            loaded.metric("rewardserve_requests_total", endpoint="/score", code="413") < 1 or \
            loaded.metric("rewardserve_feedback_agreement_pairs", model=judged_as) < 1 or \
            loaded.metric("rewardserve_retrain_rounds_total", model=name, result="promoted") < 1 or \
            loaded.metric("rewardserve_personal_shift_count") < 1:
        assert time.monotonic() < deadline, "the background load did not reach /rerank and the 413 path"
        time.sleep(0.05)
    exposition = httpx.get(loaded.url + "/metrics").text
    result = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.fixture(scope="module")
def prometheus(loaded: Running, tool: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus on loopback that has scraped the loaded service for ~15 s; its URL."""
    binary = tool("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": "rewardserve", "metrics_path": "/metrics",
                                  "static_configs": [{"targets": [loaded.url.removeprefix("http://")],
                                                      "labels": TARGET_LABELS}]}]}
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/-/ready").status_code == 200 and _query(url, 'rewardserve_items_total') and \
                        len(_query(url, "rewardserve_items_total[1m]")[0]["values"]) >= 15:
                    break
            except (httpx.TransportError, IndexError, KeyError):
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.5)
        else:
            raise TimeoutError("Prometheus did not collect 15 scrapes in 60 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _query(url: str, expr: str) -> list[dict]:
    body = httpx.get(url + "/api/v1/query", params={"query": expr}).json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def _has_data(url: str, expr: str) -> bool:
    """True when the query returns at least one finite sample."""
    return any(math.isfinite(float(sample["value"][1])) for sample in _query(url, expr))


def dashboard_expressions() -> list[str]:
    """Every target expression of the dashboard, with Grafana's variables filled in."""
    dashboard = json.loads((K8S / "grafana" / "rewardserve.json").read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"unknown variable in {panel['title']!r}: {expr}"
            found.append(expr)
    return found


def alert_signals() -> dict[str, str]:
    """Each alert's expression without its threshold: the left side of the top-level comparison."""
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    return {rule["alert"]: _left_of_comparison(rule["expr"]) for rule in rules}


def _left_of_comparison(expr: str) -> str:
    depth, quoted = 0, False
    for i, ch in enumerate(expr):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "([{":
            depth += 1
        elif not quoted and ch in ")]}":
            depth -= 1
        elif not quoted and depth == 0 and re.match(r"\s(>|<|==|!=|>=|<=)\s", expr[i:]):
            return expr[:i].strip()
    raise AssertionError(f"no top-level comparison in alert expression {expr!r}")


def autoscaler_queries() -> dict[str, str]:
    """The prometheus-adapter rule (templates filled as the adapter does for one pod) and KEDA's query."""
    adapter = yaml.safe_load((K8S / "prometheus" / "adapter-rules.yaml").read_text())["rules"]["custom"][0]
    matchers = ",".join(f'{k}="{v}"' for k, v in TARGET_LABELS.items())
    metric = adapter["seriesQuery"].split("{")[0].strip("'")
    query = adapter["metricsQuery"].replace("<<.Series>>", metric).replace("<<.LabelMatchers>>", matchers)
    keda = yaml.safe_load((K8S / "overlays" / "gpu-keda" / "scaledobject.yaml").read_text())
    return {"prometheus-adapter": query,
            "keda": keda["spec"]["triggers"][0]["metadata"]["query"],
            "adapter series": adapter["seriesQuery"]}


def test_every_dashboard_query_returns_data(prometheus: str) -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 20
    empty = [e for e in expressions if not _has_data(prometheus, e)]
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)


def test_dashboard_variables_list_the_pod_and_model(prometheus: str, loaded: Running) -> None:
    dashboard = json.loads((K8S / "grafana" / "rewardserve.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name, label in (("model", "model"), ("pod", "pod")):
        series = re.fullmatch(r"label_values\((.*), (\w+)\)", variables[name]["query"]["query"])
        assert series and series.group(2) == label
        selector = series.group(1).replace("$model", ".*")
        values = httpx.get(prometheus + f"/api/v1/label/{label}/values", params={"match[]": selector}).json()["data"]
        expected = (["ens/bert", "ens/bert#2", "lengthy", "mine", "rm", "rm-int8"] if name == "model"
                    else [TARGET_LABELS["pod"]])
        assert values == expected
    targets = [t for p in dashboard["panels"] for t in p.get("targets", [])]
    assert all(t["datasource"]["uid"] == "${datasource}" for t in targets)


def test_every_alert_and_autoscaler_query_returns_data(prometheus: str, loaded: Running) -> None:
    queries = {**alert_signals(), **autoscaler_queries()}
    assert len(queries) == 16
    empty = {name: q for name, q in queries.items() if not _has_data(prometheus, q)}
    assert not empty, f"queries without data: {empty}"
    # the signals read the state of a healthy, loaded service
    assert float(_query(prometheus, alert_signals()["RewardserveReplicaDown"])[0]["value"][1]) == 1
    assert float(_query(prometheus, alert_signals()["RewardserveNotReady"])[0]["value"][1]) == 1
    # the loop's: the recorded promotion, joined to the live pairs of its version (the clients name it with the
    # model: name@version), and the round just recorded
    name = loaded.state.default.name
    (worse,) = _query(prometheus, alert_signals()["RetrainedModelWorseThanParent"])
    assert {k: worse["metric"][k] for k in ("namespace", "model", "version", "parent")} == {
        "namespace": TARGET_LABELS["namespace"], "model": name, "version": _served_version(loaded.url, name),
        "parent": PARENT_VERSION}
    assert 0 <= float(_query(prometheus, alert_signals()["RetrainStalled"])[0]["value"][1]) < 3600


def test_the_reward_hacking_alert_fires_on_a_gaming_run_and_stays_quiet_on_a_steady_one(prometheus: str) -> None:
    rules = {r["alert"]: r["expr"] for r in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]}
    firing = _query(prometheus, rules["RewardHackingSuspected"])
    assert {(s["metric"]["model"], s["metric"]["run"]) for s in firing} == {("lengthy", "gaming")}, firing
    signals = {run: {name: float(_query(prometheus, f'rewardserve_monitor_{name}{{model="lengthy", run="{run}", '
                                                    f'window="5m"}}')[0]["value"][1])
                     for name in ("reward_z_shift", "length_spearman", "length_mean")}
               for run in ("gaming", "steady")}
    assert signals["gaming"]["length_mean"] > signals["steady"]["length_mean"]
    assert abs(signals["steady"]["reward_z_shift"]) < 1 < signals["gaming"]["reward_z_shift"], signals
    # nothing drifts 3 stds and the ensemble's members are one model: those alerts stay quiet (the load's
    # human judgements tie the saturated tiny model on " good" vs " good good", so HumanAgreementLow may fire)
    for quiet in ("RewardDistributionShift", "EnsembleDisagreementHigh"):
        assert _query(prometheus, rules[quiet]) == [], quiet
