"""``rewardserve export``: bundle → ``onnx/`` variants, each gated on parity and recorded in the card."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from export.convert import to_fp16, to_fp32, to_int8
from export.errors import ExportError
from export.evaluate import variant_scorers
from export.onnx_export import TWO_GB, export_onnx
from export.parity import ROW_THRESHOLDS, THRESHOLDS, RowParity, gate, measure
from export.static_int8 import calibration_batches, nncf_int8_onnx
from rewardmodel import (
    BundleCard,
    Formatter,
    PreferenceExample,
    RewardModelError,
    load_tokenizer,
    read_card,
    write_card,
)
from rewardmodel.card import sha256_file
from rewardmodel.head import OutputLayout
from rewardmodel.onnx_model import CPU, CUDA, available_providers
from rewardmodel.scoring import outputs_encoded, rows_encoded
from rewardmodel.sources import DEMO_DATA, load_examples
from rewardmodel.torch_model import load_torch_model, torch_row_scorer, torch_scorer
from rewardmodel.variants import ONNX_VARIANTS

log = logging.getLogger(__name__)

VARIANTS = tuple(ONNX_VARIANTS)


@dataclass(frozen=True)
class ExportSettings:
    """What ``rewardserve export`` does."""

    variants: tuple[str, ...] = ("fp32", "int8")
    opset: int = 17
    calibration_data: str = ""
    """Preference data for the parity check; empty: the demo set's held-out split."""
    samples: int = 256
    """Preference examples of the calibration data used for parity."""
    calibration_items: int = 300
    """Items (completions) that calibrate int8-static's activation ranges: the calibration data's examples
    after the parity ones, so the gate measures on data the ranges were not fitted to."""
    force: bool = False
    """Write variants that miss their parity thresholds (marked as failed in the card)."""
    external_data_threshold: int = TWO_GB
    batch_size: int = 32
    trust_remote_code: bool = False
    """Allow the bundle's own Python code (a model imported with it) to load its torch reference."""

    def validate(self) -> ExportSettings:
        """Raise :class:`ExportError` on settings that cannot work; return self."""
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise ExportError(f"unknown variants {unknown or '(none)'}; choose from {', '.join(VARIANTS)}")
        if not 11 <= self.opset <= 21:
            raise ExportError(f"opset {self.opset} is outside 11..21, the range onnxruntime 1.2x runs")
        return self


def _calibration(settings: ExportSettings) -> tuple[list[PreferenceExample], list[PreferenceExample]]:
    """(parity examples, the further examples that calibrate int8-static)."""
    static = "int8-static" in settings.variants
    extra = settings.calibration_items if static else 0
    examples = load_examples(settings.calibration_data or f"{DEMO_DATA}:heldout", limit=settings.samples + extra)
    parity, rest = examples[:settings.samples], examples[settings.samples:]
    if static and not rest:  # a small calibration set: the ranges are fitted to the parity examples too
        log.warning("the calibration data hold no examples beyond the %d parity ones: int8-static is calibrated "
                    "on those", len(parity))
        rest = parity
    return parity, rest


def formatted(formatter: Formatter, examples: Sequence[PreferenceExample]) -> list[PreferenceExample]:
    """The examples the bundle's formatting can encode: an imported model's chat template may refuse some
    conversations (Gemma's refuses a system turn), which it cannot be asked to score anyway."""
    kept = []
    for ex in examples:
        try:
            formatter.encode_many([(ex.prompt, c) for c in ex.completions])
        except RewardModelError:
            continue
        kept.append(ex)
    if len(kept) < len(examples):
        log.warning("%d of %d calibration examples left out: the bundle's formatting refuses them",
                    len(examples) - len(kept), len(examples))
    if examples and not kept:
        raise ExportError("the bundle's formatting refuses every calibration example; pass --calibration-data "
                          "in a form its chat template accepts")
    return kept


def _check_providers(variant: str) -> list[str]:
    """Where a variant's parity is checked: its target provider when installed, else the CPU."""
    if variant == "fp16" and CUDA in available_providers():
        return [CUDA]
    return [CPU]


def _fp16_note(providers: Sequence[str]) -> dict[str, str]:
    if CUDA in providers:
        return {}
    return {"note": "fp16 targets the CUDA execution provider, which this onnxruntime lacks: parity was checked on "
                    "the CPU provider only. GPU kernels round differently; re-run the export on a GPU machine to "
                    "check the numbers a GPU server returns."}


def export_bundle(bundle: str | Path, settings: ExportSettings) -> BundleCard:
    """Export ``settings.variants`` into ``bundle/onnx`` and record them in the card."""
    settings = settings.validate()
    root = Path(bundle)
    card = read_card(root)
    # eager attention exports as plain MatMul/Softmax, the pattern onnxruntime fuses into its Attention op
    model, _ = load_torch_model(root, card=card, attn_implementation="eager",
                                trust_remote_code=settings.trust_remote_code)
    formatter = Formatter(load_tokenizer(root), card.formatting)
    examples, calibrating = (formatted(formatter, part) for part in _calibration(settings))
    encoded = formatter.encode_many([(ex.prompt, c) for ex in examples for c in ex.completions])
    reference, reference_rows = _reference(model, card, encoded, settings.batch_size)
    cfg = model.config
    heads, hidden = int(getattr(cfg, "num_attention_heads", 0)), int(getattr(cfg, "hidden_size", 0))

    staging = root / "onnx.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    records: dict[str, dict[str, Any]] = {}
    try:
        raw = export_onnx(model, card.formatting, staging / "raw.onnx", settings.opset,
                          settings.external_data_threshold)
        convert = {"fp32": to_fp32, "fp16": to_fp16, "int8": to_int8}
        for variant in settings.variants:
            started = time.perf_counter()
            path = staging / Path(ONNX_VARIANTS[variant].file).name
            if variant == "int8-static":
                items = formatter.encode_many([(ex.prompt, c) for ex in calibrating for c in ex.completions])
                # from the plain export: NNCF's ONNX backend does not know onnxruntime's fused contrib ops
                method = nncf_int8_onnx(raw, path, calibration_batches(items[:settings.calibration_items],
                                                                       card.formatting),
                                        settings.external_data_threshold)
            else:
                method = convert[variant](raw, path, card.model_type, heads, hidden,
                                          settings.external_data_threshold)
            records[variant] = _check(variant, path, method, reference, reference_rows, encoded, examples, formatter,
                                      settings, card.layout)
            log.info("%s: %s (%.1fs)", variant, records[variant]["parity"], time.perf_counter() - started)
        raw.unlink()
        raw.with_name(raw.name + ".data").unlink(missing_ok=True)
        _install(staging, root / "onnx")
        for variant, record in records.items():
            record["sha256"] = sha256_file(root / ONNX_VARIANTS[variant].file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    onnx_records = {k: v for k, v in card.onnx.items() if k not in records} | records
    return write_card(root, replace(card, onnx=onnx_records))


def _check(variant: str, path: Path, method: str, reference: np.ndarray, reference_rows: np.ndarray | None,
           encoded: Sequence[Any], examples: Sequence[PreferenceExample], formatter: Formatter,
           settings: ExportSettings, layout: OutputLayout) -> dict[str, Any]:
    """Gate the variant on its reward, and a criteria (or gated) model on each criterion's output too; measure its
    read rows in the same pass, where the reference and the graph have them."""
    scorer, row_scorer, providers = variant_scorers(path, variant, _check_providers(variant))
    rows_record: dict[str, Any] = {}
    if reference_rows is not None and row_scorer is not None:
        outputs, rows = rows_encoded(row_scorer, formatter.spec, encoded, settings.batch_size, width=layout.width)
        rows_record = {"rows": _row_gate(variant, reference_rows, rows)}
    else:
        outputs = outputs_encoded(scorer, formatter.spec, encoded, settings.batch_size, width=layout.width)
    parity = measure(layout.reward(reference), layout.reward(outputs), examples)
    failures = gate(variant, parity, settings.force)
    per_criterion = {}
    criteria = layout.criteria
    wanted, got = layout.criteria_outputs(reference), layout.criteria_outputs(outputs)
    for c, name in enumerate(criteria.names if criteria else ()):
        per_criterion[name] = measure(wanted[:, c], got[:, c], examples, name)
        failures += [f"{name}: {f}" for f in gate(variant, per_criterion[name], settings.force, name)]
    size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + ".data"))
    return {
        "file": ONNX_VARIANTS[variant].file,
        "dtype": ONNX_VARIANTS[variant].dtype,
        "opset": next((o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                       if o.domain in ("", "ai.onnx")), settings.opset),
        "size_bytes": size,
        "conversion": method,
        "providers_checked": providers,
        "parity": parity.to_dict(),
        **({"criteria_parity": {n: p.to_dict() for n, p in per_criterion.items()}} if criteria else {}),
        "thresholds": THRESHOLDS[variant].__dict__,
        "parity_passed": not failures,
        "parity_failures": failures,
        "calibration": {"data": settings.calibration_data or f"{DEMO_DATA}:heldout", "examples": len(examples)},
        **(_fp16_note(providers) if variant == "fp16" else {}),
        **rows_record,
    }


def _reference(model: Any, card: BundleCard, encoded: Sequence[Any], batch_size: int
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """The torch model's outputs, and its read rows where the head has them (None: it has none)."""
    width = card.layout.width
    if model.why_no_rows() is None:
        try:
            return rows_encoded(torch_row_scorer(model), card.formatting, encoded, batch_size, width=width)
        except RewardModelError:
            pass  # a head that reads every token: scores only, as export_onnx decides too
    return outputs_encoded(torch_scorer(model), card.formatting, encoded, batch_size, width=width), None


def _row_gate(variant: str, reference: np.ndarray, rows: np.ndarray) -> dict[str, Any]:
    """The variant's read rows against the reference's (its record's ``rows``)."""
    parity = RowParity.of(reference, rows, variant)
    if not parity.passed:
        log.warning("%s: its read rows differ from torch's by %.3g on average (limit %g): it serves scores, but not "
                    "personal rewards", variant, parity.mean_rel_error, ROW_THRESHOLDS[variant])
    return parity.to_dict() | {"threshold": ROW_THRESHOLDS[variant]}


def _install(staging: Path, target: Path) -> None:
    """Move the staged variants into ``onnx/``, replacing the ones of the same name."""
    target.mkdir(exist_ok=True)
    for item in staging.iterdir():
        item.replace(target / item.name)
