"""Backends: one small protocol (:class:`Backend`), onnxruntime, OpenVINO and torch implementations.

Routes and the scheduler never import onnxruntime or torch; :func:`load_backend` imports the one the
settings ask for (through the table in :mod:`service.engines`), so an onnx-only install never loads torch (nor
OpenVINO).
"""

from __future__ import annotations

from pathlib import Path

from rewardmodel import BundleCard
from service.backends.base import Backend, BackendInfo
from service.engines import BACKENDS
from service.errors import BackendFailure
from service.settings import ServiceSettings

__all__ = ["Backend", "BackendInfo", "load_backend"]


def load_backend(root: Path, card: BundleCard, settings: ServiceSettings) -> Backend:
    """The backend ``settings`` ask for (a concrete one: ``auto`` is resolved before), loaded; raises
    :class:`~service.errors.BackendFailure`."""
    engine = BACKENDS.get(settings.backend)
    if engine is None:
        raise BackendFailure(f"backend {settings.backend!r} was not resolved to one of {sorted(BACKENDS)}")
    if not engine.installed():
        raise BackendFailure(f"--backend {engine.name} needs {engine.package}: pip install "
                             f"'rewardserve[{engine.extra}]'")
    backend: Backend = engine.load_class().from_settings(root, card, settings)
    return backend
