"""The container image and the Kubernetes manifests, checked by the tools operators use: hadolint,
kustomize (each overlay builds) and kubernetes-validate --strict (each object is valid for the API)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.engines import BACKENDS
from tests.ops.conftest import K8S, OVERLAYS, ROOT

# Custom resources kubernetes-validate has no schema for (it says so and moves on); everything else
# must be validated, not warned about.
CRD_KINDS = {"ServiceMonitor", "ScaledObject"}


def test_dockerfile_is_hadolint_clean(tool: Callable[..., str]) -> None:
    hadolint = tool("hadolint")
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_serves_without_the_training_stack() -> None:
    text = (ROOT / "Dockerfile").read_text()
    targets = {line.split()[-1] for line in text.splitlines() if line.startswith("FROM ") and " AS " in line}
    assert {"cpu", "gpu", "train"} <= targets
    assert "[serve,postgres]" in text and "[serve-gpu,postgres]" in text
    assert "[train" not in text and "[dev" not in text
    assert "USER 10001:10001" in text and "HEALTHCHECK" in text and 'ENTRYPOINT ["rewardserve"]' in text


def _build(tool: Callable[..., str], overlay: str) -> str:
    # the pinned kustomize tests/full.sh installs first; a kubectl's built-in kustomize only where it is missing
    found = tool("kustomize", "kubectl")
    command = [found, "kustomize"] if found.endswith("kubectl") else [found, "build"]
    result = subprocess.run([*command, str(K8S / "overlays" / overlay)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, tool: Callable[..., str]) -> tuple[str, str]:
    """(name, the built manifests) of each overlay."""
    return request.param, _build(tool, request.param)


def test_overlay_validates_strictly(overlay: tuple[str, str], tool: Callable[..., str], tmp_path: Path) -> None:
    validate = tool("kubernetes-validate")
    name, built = overlay
    path = tmp_path / f"{name}.yaml"
    path.write_text(built)
    result = subprocess.run([validate, "--strict", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    objects = _objects(built)
    checked = [line for line in result.stdout.splitlines() if line.startswith("INFO") and "passed" in line]
    assert len(checked) == len([o for o in objects if o["kind"] not in CRD_KINDS])
    unchecked = [line for line in result.stdout.splitlines() if line.startswith("WARN")]
    assert all(any(f"kind {k} " in line for k in CRD_KINDS) for line in unchecked), unchecked


def test_overlay_drains_probes_and_scales_as_documented(overlay: tuple[str, str]) -> None:
    name, built = overlay
    listed = _objects(built)
    objects = {o["kind"]: o for o in listed}
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config_map = next(o for o in listed if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(
        "rewardserve-config"))
    config = config_map["data"]
    assert container["envFrom"][0]["configMapRef"]["name"] == config_map["metadata"]["name"]  # hashed name
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # the grace period covers the preStop sleep plus the longest request the service may still finish
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + float(config["REWARDSERVE_REQUEST_TIMEOUT_S"])
    assert config["REWARDSERVE_HOST"] == "0.0.0.0"
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["capabilities"]["drop"] == ["ALL"] and not security["allowPrivilegeEscalation"]
    resources = container["resources"]
    if name.startswith("gpu"):
        assert resources["limits"]["nvidia.com/gpu"] == "1" and config["REWARDSERVE_DEVICE"] == "cuda"
    else:
        assert "nvidia.com/gpu" not in resources["limits"]
        assert (config["REWARDSERVE_BACKEND"], config["REWARDSERVE_VARIANT"]) == ("auto", "auto")
        assert int(config["REWARDSERVE_THREADS"]) == int(resources["limits"]["cpu"])
        # whole cores per stream, for any stream count auto may give a backend
        assert all(int(config["REWARDSERVE_THREADS"]) % e.auto_streams == 0 for e in BACKENDS.values())
    scaler = objects.get("ScaledObject") if name.endswith("keda") else objects.get("HorizontalPodAutoscaler")
    assert scaler is not None and ("HorizontalPodAutoscaler" in objects) != name.endswith("keda")
    selector = objects["Deployment"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= objects["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    services = [o for o in listed if o["kind"] == "Service"]
    (service,) = [o for o in services if o["metadata"]["name"] == "rewardserve"]  # the clients' Service
    assert service["spec"]["selector"] == selector
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    monitor = objects["ServiceMonitor"]["spec"]
    # the ServiceMonitor scrapes each pod once: through the clients' Service, never through another one (the
    # retrain component's headless Service selects the same pods)
    scraped = [o for o in services if monitor["selector"]["matchLabels"].items() <= o["metadata"]["labels"].items()]
    assert scraped == [service]
    assert monitor["endpoints"][0]["path"] == "/metrics"
    # rolling updates never drop below the replicas that serve; pods run under the default seccomp profile
    strategy = objects["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0 and int(strategy["maxSurge"]) >= 1
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    # the startup probe gives loading and warm-up the 10 minutes docs/operations.md promises before a restart
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


EXPECTED_SCALING = {"cpu": (2, 10, 256), "gpu": (2, 10, 2048), "gpu-keda": (2, 10, 2048), "cpu-feedback": (2, 10, 256)}
"""(min replicas, max replicas, queued items per replica that adds one) of each overlay, as docs/operations.md says."""


def test_autoscaling_targets_the_adapters_metric_within_bounds(overlay: tuple[str, str]) -> None:
    name, built = overlay
    objects = {o["kind"]: o for o in _objects(built)}
    adapter = yaml.safe_load((K8S / "prometheus" / "adapter-rules.yaml").read_text())["rules"]["custom"][0]
    exposed = adapter["name"]["as"]
    assert exposed == "rewardserve_queue_depth_items" and exposed in adapter["seriesQuery"]
    low, high, per_replica = EXPECTED_SCALING[name]
    if name.endswith("keda"):
        spec = objects["ScaledObject"]["spec"]
        trigger = spec["triggers"][0]["metadata"]
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (low, high)
        assert exposed in trigger["query"] and float(trigger["threshold"]) == per_replica
    else:
        spec = objects["HorizontalPodAutoscaler"]["spec"]
        metric = spec["metrics"][0]["pods"]
        assert (spec["minReplicas"], spec["maxReplicas"]) == (low, high)
        assert metric["metric"]["name"] == exposed  # the name the adapter serves, or the HPA sees nothing
        assert metric["target"]["type"] == "AverageValue" and float(metric["target"]["averageValue"]) == per_replica
    budget = objects["PodDisruptionBudget"]["spec"]
    assert budget.get("minAvailable", 0) >= 1 or budget.get("maxUnavailable") == 1


def _objects(text: str) -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(text) if o]


def test_feedback_overlay_migrates_first_and_reads_the_url_from_a_secret(tool: Callable[..., str]) -> None:
    from rewardserve.cli import build_parser

    objects = _objects(_build(tool, "cpu-feedback"))
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    server, (init,) = pod["containers"][0], pod["initContainers"]
    for container in (server, init):
        (env,) = [e for e in container["env"] if e["name"] == "REWARDSERVE_FEEDBACK_DB"]
        assert env["valueFrom"]["secretKeyRef"] == {"name": "rewardserve-feedback-db", "key": "url"}
        assert container["securityContext"]["readOnlyRootFilesystem"]
    assert init["image"] == server["image"]  # the same release migrates and serves
    args = build_parser().parse_args(init["args"])  # a command the CLI really has
    assert (args.command, args.feedback_command) == ("feedback", "migrate")
    assert not any(o["kind"] == "Secret" for o in objects)  # the password never lives in the repository


RETRAINS = {"cpu-feedback"}
"""The overlays that retrain on a schedule (k8s/components/retrain): the loop needs the feedback database."""


def test_only_the_feedback_overlays_retrain(overlay: tuple[str, str]) -> None:
    name, built = overlay
    jobs = [o for o in _objects(built) if o["kind"] == "CronJob"]
    assert [j["metadata"]["name"] for j in jobs] == (["rewardserve-retrain"] if name in RETRAINS else [])


def _secret(container: dict[str, Any], env_name: str) -> dict[str, str]:
    (env,) = [e for e in container.get("env", []) if e["name"] == env_name]
    return dict(env["valueFrom"]["secretKeyRef"])


def _mounts(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """A container's mount path → (the PersistentVolumeClaim behind it, mounted read-only); other volumes left out."""
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v}
    return {m["mountPath"]: (claims[m["name"]], bool(m.get("readOnly"))) for m in container["volumeMounts"]
            if m["name"] in claims}


def test_retrain_cronjob_runs_one_round_against_the_servers(tool: Callable[..., str]) -> None:
    """The CronJob runs a real `rewardserve retrain` against the Service, never two at once, with the servers'
    secrets, and writes its rounds where the servers read them (the swap sends the candidate's path)."""
    from urllib.parse import urlsplit

    from rewardserve.cli import build_parser

    objects = _objects(_build(tool, "cpu-feedback"))
    (cron,) = [o for o in objects if o["kind"] == "CronJob"]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(
        "rewardserve-config"))["data"]
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and spec["startingDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["restartPolicy"] == "Never" and 0 < job["backoffLimit"] <= 3 and job["activeDeadlineSeconds"] > 0
    # exit 1 (the gate refused) fails the job at once: a retry would train on the same data to be refused again
    (refused,) = [r for r in job["podFailurePolicy"]["rules"] if "onExitCodes" in r]
    assert refused["action"] == "FailJob" and refused["onExitCodes"] == {
        "containerName": container["name"], "operator": "In", "values": [1]}

    # a command the CLI really has, aimed at every server pod and the name the servers serve: the swap goes to
    # each address of a headless Service of the servers' pods (through the clients' Service it would reach one)
    command = container["command"]
    assert command[:2] == ["rewardserve", "retrain"]
    args = build_parser().parse_args(command[1:])
    assert args.command == "retrain" and args.min_new == 1000 and args.base is None
    assert args.all_replicas
    url = urlsplit(args.server)
    headless, clients = services[url.hostname], services["rewardserve"]
    assert headless is not clients and headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is False  # ready pods only: a loading one serves `current`
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert headless["spec"]["selector"] == clients["spec"]["selector"] == selector
    assert url.port == headless["spec"]["ports"][0]["port"] == clients["spec"]["ports"][0]["port"] == \
        int(config["REWARDSERVE_PORT"])
    assert headless["spec"]["ports"][0]["targetPort"] == clients["spec"]["ports"][0]["targetPort"]
    assert args.name == config["REWARDSERVE_MODEL_NAME"]

    # the same release as the servers (with the training stack: the serving image has no torch)
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    server_image, image = server["image"].rsplit(":", 1), container["image"].rsplit(":", 1)
    assert image[0] == server_image[0] and image[1].split("-")[0] == server_image[1].split("-")[0]
    assert image[1] != server_image[1]

    # the rounds: written by the job on a claim every server pod mounts read-only at the same path (the swap sends
    # the candidate's path as the job sees it); the servers' own bundle too (round 1 trains from the path the
    # server reports in /v1/models)
    ours, theirs = _mounts(pod, container), _mounts(deployment["spec"]["template"]["spec"], server)
    out = Path(args.out)
    (rounds,) = [m for m in ours if out.is_relative_to(m)]
    assert rounds in theirs and theirs[rounds] == (ours[rounds][0], True) and not ours[rounds][1]
    served = Path(config["REWARDSERVE_MODEL"])
    (model,) = [m for m in theirs if served.is_relative_to(m)]
    assert ours.get(model) == theirs[model]
    claims = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "PersistentVolumeClaim"}
    assert claims[ours[rounds][0]]["accessModes"] == ["ReadWriteMany"]  # one writer, readers on any node

    # the servers' secrets, by reference: the feedback database, and the admin key that turns /admin on
    assert _secret(container, "REWARDSERVE_FEEDBACK_DB") == _secret(server, "REWARDSERVE_FEEDBACK_DB")
    assert _secret(container, "REWARDSERVE_ADMIN_KEY") == _secret(server, "REWARDSERVE_ADMIN_KEYS")
    assert not any(o["kind"] == "Secret" for o in objects)

    # as locked down as the servers, sized and labelled like them
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["capabilities"]["drop"] == ["ALL"] and not security["allowPrivilegeEscalation"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert not pod["automountServiceAccountToken"]
    resources = container["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    threads = {e["name"]: e.get("value") for e in container["env"]}["OMP_NUM_THREADS"]
    assert int(threads) == int(resources["limits"]["cpu"])
    labels = job["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "rewardserve" and labels["app.kubernetes.io/component"] == "retrain"
    # never one of the Services' (or the PodDisruptionBudget's) pods
    assert not selector.items() <= labels.items()


def test_servers_start_on_the_newest_promoted_bundle(tool: Callable[..., str], tmp_path: Path) -> None:
    """A server pod that starts after a promotion (a restart, a scale-up) serves what the job pointed
    `--out`/current at, by its resolved path; with no promotion (or a pruned one) the ConfigMap's bundle. The
    server's command runs the image's entrypoint with the Deployment's args; here the script runs for real, with
    the rounds directory moved to a temporary one and a stand-in `rewardserve` that prints what it got."""
    from rewardserve.cli import build_parser
    from rewardserve.promotion import promote
    from rewardserve.retrain import RetrainSettings

    objects = _objects(_build(tool, "cpu-feedback"))
    (cron,) = [o for o in objects if o["kind"] == "CronJob"]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    config = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(
        "rewardserve-config"))["data"]
    (job,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    out = Path(build_parser().parse_args(job["command"][1:]).out)
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    assert build_parser().parse_args(server["args"]).command == "serve"
    shell, flag, script, *rest = server["command"]
    assert (shell, flag) == ("sh", "-c") and str(out / "current") in script
    assert server["securityContext"]["readOnlyRootFilesystem"]  # the script writes nothing

    bin_dir, rounds = tmp_path / "bin", tmp_path / "rounds"
    bin_dir.mkdir()
    stand_in = bin_dir / "rewardserve"
    stand_in.write_text('#!/bin/sh\nprintf "%s\\n" "$REWARDSERVE_MODEL" "$@"\n')
    stand_in.chmod(0o755)

    def started() -> list[str]:
        env = {"PATH": os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"]),
               "REWARDSERVE_MODEL": config["REWARDSERVE_MODEL"]}
        done = subprocess.run([shell, flag, script.replace(str(out), str(rounds)), *rest, *server["args"]], env=env,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    original = [config["REWARDSERVE_MODEL"], *server["args"]]
    assert started() == original  # no rounds volume content yet
    rounds.mkdir()
    assert started() == original  # rounds, none promoted
    first, second = (rounds / f"round-{n}-abc" / "candidate" for n in (1, 2))
    for candidate in (first, second):
        candidate.mkdir(parents=True)
        promote(lambda bundle: {"version": bundle.parent.name}, candidate, RetrainSettings(db="unused", out=rounds))
        assert started() == [str(candidate.resolve()), *server["args"]]  # the newest promotion, the link resolved
    shutil.rmtree(second)  # pruned while `current` still names it
    assert started() == original
