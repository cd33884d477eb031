"""Typed errors of the reward-model contract.

Hierarchy::

    RewardModelError            base of everything this package raises on purpose
    ├── BundleError             a bundle directory or its card is missing, stale or tampered with
    ├── FormatError             an input cannot be turned into model input under the card's rules
    └── DataError               a preference record is malformed (names the source line and field)

Stage packages (training, export, service) catch ``RewardModelError`` at their boundary and map it
to their own surface (CLI exit code, HTTP status).
"""

from __future__ import annotations


class RewardModelError(Exception):
    """Base class of the contract's errors."""


class BundleError(RewardModelError):
    """The bundle cannot be used; the message says what to do about it."""


class FormatError(RewardModelError):
    """A (prompt, completion) cannot be formatted under the bundle's formatting record."""


class DataError(RewardModelError):
    """A preference record is malformed.

    ``where`` names the record (``file.jsonl:12``) so the user can find the line.
    """

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.reason = message
