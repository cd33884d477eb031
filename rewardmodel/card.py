"""The bundle card ``reward_model.json``: write, read, validate.

A bundle is a directory holding a Hugging Face checkpoint (``config.json``, ``*.safetensors``,
``tokenizer.json`` …), this card, and after export an ``onnx/`` folder. The card records the scoring spec
(the formatting, :class:`~rewardmodel.spec.FormatSpec`, and the head, :class:`~rewardmodel.head.HeadSpec`),
score normalization, a training summary or where the model was imported from, the ONNX variants, and the
sha256 of every file, so that a bundle edited after it was written is refused instead of served.

Format versions: 2 adds the head and the formatting's positions, suffix and BOS policy; a version-1 card
(``rewardserve train``'s before them) reads as a classifier head with its EOS as the suffix.

Hashing a large bundle's files (16 GB for an 8B model) on every start would take minutes, so a verified file
is remembered in a :class:`VerifiedFiles` cache by its size, mtime, ctime and inode: a file changed since is
hashed again, and refused if it no longer matches.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from rewardmodel.criteria import Criteria
from rewardmodel.errors import BundleError
from rewardmodel.head import HeadSpec, OutputLayout
from rewardmodel.spec import FormatSpec

CARD_NAME = "reward_model.json"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
"""Pickle-format files: never loaded (they can run code); a bundle holding one is refused."""


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
    """A multi-attribute model's criteria, one per output of its head (or objective of a gated one); None: one
    output, the reward."""
    head: HeadSpec = field(default_factory=HeadSpec)
    source: dict[str, Any] = field(default_factory=dict)
    """Where an imported model came from: its family, source and the import proof's figures (empty: trained)."""
    personalization: dict[str, Any] = field(default_factory=dict)
    """The basis heads of personal rewards (:mod:`rewardmodel.personal`): their file, K, what they were fitted on
    and the held-out figures (empty: none)."""

    def __post_init__(self) -> None:
        self.layout  # noqa: B018 -- a head, formatting and criteria that do not fit together are refused here

    @property
    def layout(self) -> OutputLayout:
        """How the backend's output rows make rewards, criteria and step rewards."""
        return OutputLayout.of(self.head, self.formatting, self.criteria)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, formatting and head records included."""
        data = asdict(self)
        data["formatting"] = self.formatting.to_dict()
        data["head"] = self.head.to_dict()
        data["format_version"] = FORMAT_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleCard:
        """Parse a card of a readable version; raise :class:`BundleError` saying what is wrong."""
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise BundleError(
                f"{CARD_NAME} has format_version {version!r}; this rewardserve reads versions "
                f"{list(READABLE_VERSIONS)}. Upgrade rewardserve, or re-create the bundle with this version."
            )
        try:
            fields = dict(data)
            fields["formatting"] = FormatSpec.from_dict(fields["formatting"])
            fields["head"] = HeadSpec.from_dict(fields.get("head") or {})
            fields["format_version"] = FORMAT_VERSION
            if fields.get("normalization") is not None:
                fields["normalization"] = Normalization(**fields["normalization"])
            if fields.get("criteria") is not None:
                fields["criteria"] = Criteria.from_dict(fields["criteria"])
            return cls(**fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{CARD_NAME} is malformed ({exc}); re-create the bundle") from exc


def content_id(card: BundleCard, *context: str) -> str:
    """A short content id of the bundle: its files' hashes (and ``context``, e.g. which engine runs them)."""
    text = "\n".join([*context, *(f"{k}={v}" for k, v in sorted(card.files.items()))])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class VerifiedFiles:
    """sha256 of files already hashed, remembered by (size, mtime, ctime, inode) in one JSON file per bundle
    under ``directory``: any write to a file changes its ctime, so a changed file is always hashed again.
    ``directory`` None: no memory, every file is hashed."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def _record(self, root: Path) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / (hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:24] + ".json")

    def hashes(self, root: Path, rels: list[str]) -> dict[str, str]:
        """sha256 of each of ``rels`` (paths under ``root``), hashing only files changed since they were last."""
        record = self._record(root)
        known: dict[str, Any] = {}
        if record is not None and record.is_file():
            try:
                known = json.loads(record.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                known = {}
        out, fresh = {}, {}
        for rel in rels:
            key = self._key(root / rel)
            entry = known.get(rel)
            digest = entry[1] if isinstance(entry, list) and len(entry) == 2 and entry[0] == key else \
                sha256_file(root / rel)
            out[rel], fresh[rel] = digest, [key, digest]
        self._save(root, known, fresh)
        return out

    def remember(self, root: Path, hashes: dict[str, str]) -> None:
        """Record ``hashes`` (just computed, of files under ``root``) as verified."""
        self._save(root, {}, {rel: [self._key(root / rel), digest] for rel, digest in hashes.items()})

    @staticmethod
    def _key(path: Path) -> list[int]:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    def _save(self, root: Path, known: dict[str, Any], fresh: dict[str, Any]) -> None:
        record = self._record(root)
        if record is None or fresh == known:
            return
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            tmp = record.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(fresh), encoding="utf-8")
            tmp.replace(record)
        except OSError:  # a read-only cache only costs hashing again next time
            pass


def _bundle_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != CARD_NAME)


def write_card(directory: str | Path, card: BundleCard, verified: VerifiedFiles | None = None) -> BundleCard:
    """Hash every file of the bundle, then write the card; returns the card with ``files`` filled in.
    ``verified`` remembers the hashes, so the first start after this need not hash the files again."""
    root = Path(directory)
    if not any(root.glob("*.safetensors")):
        raise BundleError(f"{root} has no *.safetensors weights; save the model with safe_serialization")
    files = (verified or VerifiedFiles(None)).hashes(root, [p.relative_to(root).as_posix()
                                                            for p in _bundle_files(root)])
    card = replace(card, files=files)
    tmp = root / (CARD_NAME + ".tmp")
    tmp.write_text(json.dumps(card.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(root / CARD_NAME)  # atomic: a reader never sees half a card
    return card


def read_card(directory: str | Path, verify: bool = True, verified: VerifiedFiles | None = None) -> BundleCard:
    """Read and validate a bundle's card.

    With ``verify`` every file listed in the card must exist with its recorded sha256 (files ``verified``
    remembers unchanged are not hashed again), and the bundle must hold no pickle-format weights (only
    safetensors are ever loaded).
    """
    root = Path(directory)
    path = root / CARD_NAME
    if not root.is_dir():
        raise BundleError(f"{root} is not a directory; pass the bundle directory written by `rewardserve train`")
    if not path.is_file():
        raise BundleError(
            f"{root} is not a rewardserve bundle: {CARD_NAME} is missing. A reward model from the Hub or another "
            f"trainer: `rewardserve import {root} --output-dir DIR` (or serve it directly: `rewardserve serve "
            f"--model {root}` imports it on start). A base model: `rewardserve train --model {root}`."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); restore it or re-create the bundle") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path} must hold a JSON object")
    card = BundleCard.from_dict(data)
    if verify:
        verify_files(root, card, verified)
    return card


def verify_files(root: Path, card: BundleCard, verified: VerifiedFiles | None = None) -> None:
    """Check the bundle's files against the card's hashes; refuse pickle weights."""
    pickles = [p.name for p in root.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise BundleError(
            f"{root} holds pickle-format files {pickles}: rewardserve loads safetensors only. "
            "Remove them (the safetensors weights are what the card describes)."
        )
    if not card.files:
        raise BundleError(f"{CARD_NAME} in {root} lists no files; re-create the bundle")
    for rel in card.files:
        target = root / rel
        if not target.is_file():
            raise BundleError(f"{target} is listed in {CARD_NAME} but missing; restore it or re-create the bundle")
    hashes = (verified or VerifiedFiles(None)).hashes(root, list(card.files))
    for rel, expected in card.files.items():
        target = root / rel
        if hashes[rel] != expected:
            raise BundleError(
                f"{target} does not match its sha256 in {CARD_NAME}: the file changed after the bundle was "
                "written. Restore the original file, or re-create the bundle."
            )
