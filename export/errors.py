"""Errors of the export stage."""

from __future__ import annotations

from rewardmodel import RewardModelError


class ExportError(RewardModelError):
    """A model could not be exported or converted; the message says which step failed and why."""


class ParityError(ExportError):
    """A variant missed its parity thresholds; it was not written (``--force`` writes it anyway)."""
