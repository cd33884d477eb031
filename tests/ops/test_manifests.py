"""The container image and the Kubernetes manifests, checked by the tools operators use: hadolint,
kustomize (each overlay builds) and kubernetes-validate --strict (each object is valid for the API)."""

from __future__ import annotations

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
    assert {"cpu", "gpu"} <= targets
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
    assert objects["Service"]["spec"]["selector"] == selector
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    monitor = objects["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= objects["Service"]["metadata"]["labels"].items()
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
