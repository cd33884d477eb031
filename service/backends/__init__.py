"""Backends: one small protocol (:class:`Backend`), onnxruntime, OpenVINO and torch implementations.

Routes and the scheduler never import onnxruntime or torch; :func:`load_backend` imports the one the
settings ask for, so an onnx-only install never loads torch (nor OpenVINO).
"""

from __future__ import annotations

from pathlib import Path

from rewardmodel import BundleCard
from service.backends.base import Backend, BackendInfo
from service.settings import ServiceSettings

__all__ = ["Backend", "BackendInfo", "load_backend"]


def load_backend(root: Path, card: BundleCard, settings: ServiceSettings) -> Backend:
    """The backend ``settings`` ask for, loaded (raises :class:`~service.errors.BackendFailure`)."""
    if settings.backend == "torch":
        from service.backends.torch_backend import TorchBackend

        return TorchBackend(root, card, settings.variant, settings.device, settings.threads,
                            settings.trust_remote_code)
    if settings.backend == "openvino":
        from service.backends.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(root, card, settings.variant, settings.device, settings.threads,
                               settings.openvino_precision, settings.streams)
    from service.backends.onnxruntime_backend import OnnxBackend

    return OnnxBackend(root, card, settings.variant, settings.device, settings.threads, settings.tensorrt,
                       settings.onnx_spin, settings.streams)
