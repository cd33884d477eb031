"""What a server serves: named entries read from ``--model`` flags or a ``--models-file`` YAML.

An entry is one of three kinds, told apart by the key it carries::

    models:
      - name: demo-int8            # a bundle: "path"
        path: /bundles/demo
        variant: int8              # per-entry overrides of the serve settings (see OVERRIDES)
        threads: 1
        shadow: demo-fp32          # optional: score every request on this entry too, answer with this one
      - name: seeds                # an ensemble: "members" (bundle directories, each with its own card)
        members: [/bundles/seed1, /bundles/seed2]
        aggregate: uwo             # mean | min | uwo (mean - uwo_lambda * variance)
        uwo_lambda: 0.5
      - name: chat                 # a traffic split over other entries: "split"
        split: {demo-int8: 90, seeds: 10}
        sticky_header: x-session-id

The first entry answers requests that name no model. Entries are plain frozen values: comparing an old
and a new file's entries says what a SIGHUP must swap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from rewardmodel import CARD_NAME, read_card
from service.engines import BACKEND_CHOICES, VARIANT_CHOICES, known
from service.errors import ModelsError

OVERRIDES = ("backend", "variant", "device", "threads", "streams", "tensorrt", "onnx_spin", "openvino_precision",
             "max_batch_tokens", "max_batch_items", "max_wait_ms", "max_item_tokens", "sort_window_items",
             "max_batch_padding")
"""Serve settings an entry may set for itself; the rest (limits per request, keys, …) are the server's."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
HUB_SCHEME = "hf:"
"""A models file names a Hugging Face hub model as ``hf:owner/name`` (a bare ``owner/name`` is a path there)."""


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="what requests send as \"model\"")
    shadow: str | None = Field(None, description="another entry scoring the same requests; its answers are "
                                                 "compared with this one's and never returned")


class _Runs(_Entry):
    """An entry that loads models: it may override the serve settings that shape a backend."""

    backend: str | None = Field(None, json_schema_extra={"choices": list(BACKEND_CHOICES)})
    variant: str | None = Field(None, json_schema_extra={"choices": list(VARIANT_CHOICES)})
    device: Literal["cpu", "cuda"] | None = None
    threads: int | None = Field(None, ge=0)
    streams: int | None = Field(None, ge=1, le=64)
    tensorrt: bool | None = None
    onnx_spin: bool | None = None
    openvino_precision: Literal["f32", "bf16"] | None = None
    max_batch_tokens: int | None = Field(None, ge=8)
    max_batch_items: int | None = Field(None, ge=1)
    max_wait_ms: float | None = Field(None, ge=0)
    max_item_tokens: int | None = Field(None, ge=0)
    sort_window_items: int | None = Field(None, ge=1)
    max_batch_padding: float | None = Field(None, ge=0, le=1)

    def overrides(self) -> dict[str, Any]:
        """The serve settings this entry sets."""
        return {k: getattr(self, k) for k in OVERRIDES if getattr(self, k) is not None}

    @field_validator("backend", "variant")
    @classmethod
    def _known(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else known(str(info.field_name), value)


class BundleEntry(_Runs):
    """One bundle directory."""

    path: Path


class EnsembleEntry(_Runs):
    """Several bundles scoring every item; the reward is an aggregate of their standardized rewards."""

    members: tuple[Path, ...] = Field(min_length=2)
    aggregate: Literal["mean", "min", "uwo"] = "mean"
    uwo_lambda: float = Field(1.0, ge=0, description="uwo: reward = mean - uwo_lambda * variance across members")


class SplitEntry(_Entry):
    """A name whose requests go to other entries by weight, sticky by a request header."""

    split: dict[str, float] = Field(min_length=1)
    sticky_header: str = "x-session-id"

    @model_validator(mode="after")
    def _weights(self) -> SplitEntry:
        if any(w < 0 for w in self.split.values()) or sum(self.split.values()) <= 0:
            raise ValueError("split weights must be non-negative and not all zero")
        return self


Entry = BundleEntry | EnsembleEntry | SplitEntry
"""One named thing a request can ask for."""


def entries_from_flags(values: tuple[str, ...], default_name: str = "") -> list[Entry]:
    """``--model SRC`` or ``--model NAME=SRC`` (repeated) as bundle entries; SRC is a bundle, or a reward model
    to import on start (a plain directory or hub name). A bare SRC is named ``default_name`` (``--model-name``),
    else by its card, else by its last path part."""
    out: list[Entry] = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not Path(path).name or Path(value).is_dir():  # "a=b" may be a directory's own name
            name, path = "", value
        if not name:
            name = default_name or (read_card(path, verify=False).name if (Path(path) / CARD_NAME).is_file()
                                    else Path(path).name)
        out.append(_parse({"name": name, "path": path}, f"--model {value}"))
    return check(out)


def read_models_file(path: Path) -> list[Entry]:
    """The entries of a models file; :class:`ModelsError` says what is wrong and where."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelsError(f"cannot read the models file {path}: {exc}") from None
    rows = data.get("models") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ModelsError(f"{path}: expected a mapping with a non-empty list 'models'")
    base = Path(path).parent
    entries = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ModelsError(f"{path}: models[{i}] must be a mapping")
        row = dict(row)
        # relative bundle paths are relative to the file, so a file and its bundles can move together
        if "path" in row:
            row["path"] = _located(base, row["path"])
        if isinstance(row.get("members"), list):
            row["members"] = [_located(base, m) for m in row["members"]]
        entries.append(_parse(row, f"{path}: models[{i}]"))
    try:
        return check(entries)
    except ModelsError as exc:
        raise ModelsError(f"{path}: {exc.message}") from None


def _located(base: Path, value: Any) -> str:
    """A bundle path of the file: ``~`` and ``$VARS`` expanded, relative to the file's directory; a hub model
    (``hf:owner/name``) as it is."""
    text = os.path.expandvars(os.path.expanduser(str(value)))
    return text if text.startswith(HUB_SCHEME) else str(base / text)


def _parse(row: dict[str, Any], where: str) -> Entry:
    kinds = [k for k in ("path", "members", "split") if k in row]
    if len(kinds) != 1:
        raise ModelsError(f"{where}: an entry has exactly one of 'path' (a bundle), 'members' (an ensemble) or "
                          f"'split' (a traffic split); found {kinds or 'none'}")
    cls: type[Entry] = {"path": BundleEntry, "members": EnsembleEntry, "split": SplitEntry}[kinds[0]]  # type: ignore[assignment]
    try:
        return cls.model_validate(row)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in exc.errors())
        raise ModelsError(f"{where}: {problems}") from None


def check(entries: list[Entry]) -> list[Entry]:
    """Names are unique; splits and shadows name entries that load models (never another split)."""
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ModelsError(f"model names must be unique; got {names}")
    runs = {e.name for e in entries if not isinstance(e, SplitEntry)}
    for e in entries:
        targets = list(e.split) if isinstance(e, SplitEntry) else []
        targets += [e.shadow] if e.shadow else []
        for t in targets:
            if t not in runs or t == e.name:
                raise ModelsError(f"model {e.name!r} refers to {t!r}, which is not another bundle or ensemble "
                                  f"entry (those are: {sorted(runs - {e.name}) or 'none'})")
    return entries
