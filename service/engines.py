"""The one table of backends: each one's class, the variants it serves, the files a variant loads, its devices.

Settings (choices and coherence), models-file validation, the command line's choices, the hot-swap memory
estimate and ``--backend auto`` (:mod:`service.autoselect`) are all read off :data:`BACKENDS`; nothing else in
the service names a backend. A backend's class is imported only when that backend is loaded, so an install
without torch never imports it (nor OpenVINO).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardmodel import BundleCard
from rewardmodel.variants import ONNX_VARIANTS, TORCH_DTYPES, VARIANT_NAMES

AUTO = "auto"
"""``--backend auto`` / ``--variant auto``: the fastest engine the bundle has, measured at start."""
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Engine:
    """One backend."""

    name: str
    cls: str
    """``module:Class`` of its implementation (:class:`~service.backends.base.Backend`)."""
    variants: tuple[str, ...]
    devices: tuple[str, ...]
    exported: bool
    """Runs an exported ONNX variant (else the safetensors checkpoint)."""
    streams: bool
    """Scores several batches at once on the CPU (``--streams``)."""
    package: str
    """The Python package it needs."""
    extra: str
    """The rewardserve extra that installs it."""
    auto_streams: int = 1
    """Streams ``auto`` gives it on a CPU of two cores or more (measured: OpenVINO 2-9 % faster on 2 streams,
    onnxruntime no faster; benchmarks/results/performance-streams.md)."""

    def load_class(self) -> Any:
        """The implementation, imported now."""
        module, _, name = self.cls.partition(":")
        return getattr(importlib.import_module(module), name)

    def installed(self) -> bool:
        """Its package can be imported."""
        try:
            return importlib.util.find_spec(self.package) is not None
        except (ImportError, ValueError):  # an import hook that refuses it, or a half-installed package
            return False

    def why_not(self, variant: str, device: str, streams: int = 1) -> str | None:
        """Why this backend cannot serve ``variant`` on ``device`` with ``streams`` (None: it can)."""
        if variant not in self.variants:
            if variant in ONNX_VARIANTS and not self.exported:
                return (f"variant {variant} is an ONNX export; use --backend {_alternatives(variant)} (the {self.name} "
                        f"backend serves {_listed(self.variants)})")
            return (f"variant {variant} runs on the {_alternatives(variant)} backend; the {self.name} backend serves "
                    f"{_listed(self.variants)}")
        if device not in self.devices:
            return f"the {self.name} backend serves on --device {' or '.join(self.devices)}, not {device}"
        if streams > 1 and (not self.streams or device != "cpu"):
            return STREAMS_CPU_ONLY
        return None

    def available(self, card: BundleCard, variant: str) -> str | None:
        """Why the bundle cannot be served as ``variant`` here (None: it can): not exported, or its export failed the
        parity gate."""
        if not self.exported:
            return None
        record = card.onnx.get(variant)
        if record is None:
            return f"no {variant} ONNX variant (rewardserve export --variants {variant})"
        if not record.get("parity_passed", True):
            return f"its {variant} variant failed the parity gate"
        return None

    def weight_files(self, root: Path, card: BundleCard, variant: str) -> list[Path]:
        """The files loading ``variant`` reads (the memory a hot swap must have beside the serving version)."""
        if not self.exported:
            return sorted(root.glob("*.safetensors"))
        record = card.onnx.get(variant, {})
        if "file" not in record:
            return []
        model = root / record["file"]
        return [model, *model.parent.glob(model.name + ".data")]


BACKENDS: dict[str, Engine] = {e.name: e for e in (
    Engine("onnx", "service.backends.onnxruntime_backend:OnnxBackend", tuple(ONNX_VARIANTS), DEVICES,
           exported=True, streams=True, package="onnxruntime", extra="serve"),
    Engine("openvino", "service.backends.openvino_backend:OpenVinoBackend", ("fp32", "int8", "int8-static"),
           ("cpu",), exported=True, streams=True, package="openvino", extra="openvino", auto_streams=2),
    Engine("torch", "service.backends.torch_backend:TorchBackend", tuple(TORCH_DTYPES), DEVICES, exported=False,
           streams=False, package="torch", extra="train"),
)}
"""Every backend, by the name settings and models files use."""

STREAMS_CPU_ONLY = ("streams > 1 splits CPU cores between batches: the "
                    f"{' and '.join(e.name for e in BACKENDS.values() if e.streams)} backends on --device cpu "
                    "(torch and GPUs run one batch at a time)")
BACKEND_CHOICES: tuple[str, ...] = (AUTO, *BACKENDS)
VARIANT_CHOICES: tuple[str, ...] = (AUTO, *VARIANT_NAMES)


def known(field: str, value: str) -> str:
    """``value`` of the ``backend`` or ``variant`` setting, checked against the table; ``ValueError`` names the
    choices."""
    choices = BACKEND_CHOICES if field == "backend" else VARIANT_CHOICES
    if value not in choices:
        raise ValueError(f"{field} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _listed(names: tuple[str, ...] | list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _alternatives(variant: str) -> str:
    return " or ".join(e.name for e in BACKENDS.values() if variant in e.variants)


def incoherent(backend: str, variant: str, device: str, streams: int) -> str | None:
    """Why these settings cannot go together (None: they can); ``auto`` leaves a choice open."""
    if backend == AUTO:
        if streams > 1 and device != "cpu":
            return STREAMS_CPU_ONLY
        if variant != AUTO and not any(variant in e.variants and device in e.devices for e in BACKENDS.values()):
            return f"no backend serves variant {variant} on --device {device}"
        return None
    return BACKENDS[backend].why_not(variant if variant != AUTO else BACKENDS[backend].variants[0], device, streams)
