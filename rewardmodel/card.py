"""The bundle card ``reward_model.json``: write, read, validate.

A bundle is a directory holding a Hugging Face checkpoint (``config.json``, ``*.safetensors``,
``tokenizer.json`` …), this card, and after export an ``onnx/`` folder. The card records the
formatting rules (:class:`~rewardmodel.formatting.FormatSpec`), score normalization, a training
summary, the ONNX variants, and the sha256 of every file, so that a bundle edited after it was
written is refused instead of served.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from rewardmodel.criteria import Criteria
from rewardmodel.errors import BundleError
from rewardmodel.formatting import FormatSpec

CARD_NAME = "reward_model.json"
FORMAT_VERSION = 1
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass(frozen=True)
class Normalization:
    """Mean and std of rewards over a reference set, so served scores can be centred (``(r - mean) / std``)."""

    mean: float
    std: float
    reference: str = ""
    count: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise BundleError(f"normalization needs a finite mean and a positive std, got {self.mean}, {self.std}")


@dataclass(frozen=True)
class BundleCard:
    """Everything a stage needs to know about a bundle besides its weights."""

    name: str
    base_model: str
    architecture: Literal["encoder", "decoder"]
    model_type: str
    formatting: FormatSpec
    normalization: Normalization | None = None
    training: dict[str, Any] = field(default_factory=dict)
    onnx: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    criteria: Criteria | None = None
    """A multi-attribute model's criteria, one per output of its head; None: one output, the reward."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, formatting record included."""
        data = asdict(self)
        data["formatting"] = self.formatting.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleCard:
        """Parse a card; raise :class:`BundleError` saying what is wrong."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{CARD_NAME} has format_version {version!r}; this rewardserve reads version {FORMAT_VERSION}. "
                "Upgrade rewardserve, or re-create the bundle with this version."
            )
        try:
            fields = dict(data)
            fields["formatting"] = FormatSpec.from_dict(fields["formatting"])
            if fields.get("normalization") is not None:
                fields["normalization"] = Normalization(**fields["normalization"])
            if fields.get("criteria") is not None:
                fields["criteria"] = Criteria.from_dict(fields["criteria"])
            return cls(**fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{CARD_NAME} is malformed ({exc}); re-create the bundle") from exc


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _bundle_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != CARD_NAME)


def write_card(directory: str | Path, card: BundleCard) -> BundleCard:
    """Hash every file of the bundle, then write the card; returns the card with ``files`` filled in."""
    root = Path(directory)
    if not any(root.glob("*.safetensors")):
        raise BundleError(f"{root} has no *.safetensors weights; save the model with safe_serialization")
    files = {p.relative_to(root).as_posix(): sha256_file(p) for p in _bundle_files(root)}
    card = replace(card, files=files)
    tmp = root / (CARD_NAME + ".tmp")
    tmp.write_text(json.dumps(card.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(root / CARD_NAME)  # atomic: a reader never sees half a card
    return card


def read_card(directory: str | Path, verify: bool = True) -> BundleCard:
    """Read and validate a bundle's card.

    With ``verify`` every file listed in the card must exist with its recorded sha256, and the bundle
    must hold no pickle-format weights (only safetensors are ever loaded).
    """
    root = Path(directory)
    path = root / CARD_NAME
    if not root.is_dir():
        raise BundleError(f"{root} is not a directory; pass the bundle directory written by `rewardserve train`")
    if not path.is_file():
        raise BundleError(
            f"{root} is not a rewardserve bundle: {CARD_NAME} is missing. Create one with `rewardserve train`, "
            "or train on your checkpoint with `rewardserve train --model PATH` to get a card."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); restore it or re-create the bundle") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path} must hold a JSON object")
    card = BundleCard.from_dict(data)
    if verify:
        verify_files(root, card)
    return card


def verify_files(root: Path, card: BundleCard) -> None:
    """Check the bundle's files against the card's hashes; refuse pickle weights."""
    pickles = [p.name for p in root.iterdir() if p.suffix in _PICKLE_SUFFIXES]
    if pickles:
        raise BundleError(
            f"{root} holds pickle-format files {pickles}: rewardserve loads safetensors only. "
            "Remove them (the safetensors weights are what the card describes)."
        )
    if not card.files:
        raise BundleError(f"{CARD_NAME} in {root} lists no files; re-create the bundle")
    for rel, expected in card.files.items():
        target = root / rel
        if not target.is_file():
            raise BundleError(f"{target} is listed in {CARD_NAME} but missing; restore it or re-create the bundle")
        if sha256_file(target) != expected:
            raise BundleError(
                f"{target} does not match its sha256 in {CARD_NAME}: the file changed after the bundle was "
                "written. Restore the original file, or re-create the bundle."
            )
