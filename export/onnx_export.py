"""Exporting a bundle's torch model to ONNX with dynamic batch and sequence axes.

Uses torch's TorchScript-based exporter (``dynamo=False``): on transformers 5 it exports BERT-like
encoders and Llama/Qwen2 decoders in about a second, where the ``torch.export`` path takes 15–20 s
for the same tiny models and emits opset-conversion failures on the way; the dynamo exporter remains
the fallback if the TorchScript one fails. The module exported is the bundle's
:class:`~rewardmodel.torch_heads.ScoringModule`: no KV cache is built or returned (a reward model reads one score
per sequence, never generates), and heads read at explicit positions take them as a ``positions`` input.

Where the reward is linear in one row per item (classifier and linear heads), the graph has a second output,
``hidden``: that row (:class:`~rewardmodel.torch_heads.WithRows`), which personal rewards read. Runtimes fetch it
only when asked; the parity gate checks it like the scores.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from export.errors import ExportError
from rewardmodel import BundleError, FormatSpec
from rewardmodel.onnx_model import ROWS_OUTPUT
from rewardmodel.torch_heads import WithRows

log = logging.getLogger(__name__)

TWO_GB = 2 * 1024**3


def input_names(spec: FormatSpec) -> list[str]:
    """Graph inputs, in order (the :class:`~rewardmodel.torch_heads.ScoringModule`'s arguments)."""
    return ["input_ids", "attention_mask", *(["token_type_ids"] if spec.use_token_type_ids else []),
            *(["positions"] if spec.positions_width else [])]


def _dummy_inputs(spec: FormatSpec, names: list[str]) -> tuple[torch.Tensor | None, ...]:
    # batch 2 and length 8, with one padded row, so neither axis is traced as a constant
    ids = torch.full((2, 8), 5, dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    pad_cols = slice(0, 3) if spec.padding_side == "left" else slice(5, 8)
    ids[1, pad_cols] = spec.pad_token.id
    mask[1, pad_cols] = 0
    types = torch.zeros_like(ids) if spec.use_token_type_ids else None
    if not spec.positions_width:
        return (ids, mask, types)[: len(names)]
    positions = torch.full((2, spec.positions_width), -1, dtype=torch.long)  # right padding: rows end at 7 and 4
    positions[:, 0] = torch.tensor([7, 4])
    if spec.positions_width > 1:
        positions[:, 1] = torch.tensor([2, 1]) if spec.gate_pattern else torch.tensor([6, -1])
    return ids, mask, types, positions


def export_onnx(model: torch.nn.Module, spec: FormatSpec, path: Path, opset: int,
                external_data_threshold: int = TWO_GB) -> Path:
    """Export ``model`` (a :class:`~rewardmodel.torch_heads.ScoringModule`) to ``path`` (fp32); weights of
    ``external_data_threshold`` bytes or more go to one side file."""
    names = input_names(spec)
    args = _dummy_inputs(spec, names)
    wrapped, outputs = _with_rows(model.eval(), args)
    axes = {n: {0: "batch"} if n == "positions" else {0: "batch", 1: "sequence"} for n in names} | {
        o: {0: "batch"} for o in outputs}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # the exporter may write one file per tensor
        raw = str(Path(tmp) / "model.onnx")
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # tracing notes about Python-side shape checks and index ops; the parity gate is the real check
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.filterwarnings("ignore", message="Exporting aten::index operator")
                torch.onnx.export(wrapped, args, raw, input_names=names, output_names=outputs,
                                  dynamic_axes=axes, opset_version=opset, dynamo=False)
        except Exception as exc:  # the TorchScript exporter failed: try torch.export's
            log.warning("TorchScript ONNX export failed (%s); retrying with the dynamo exporter", exc)
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
            try:
                shapes = {n: {0: batch} if n == "positions" else {0: batch, 1: seq} for n in names}
                torch.onnx.export(wrapped, args, raw, input_names=names, output_names=outputs,
                                  dynamic_shapes=shapes, opset_version=opset, dynamo=True)
            except Exception as exc2:
                raise ExportError(f"ONNX export failed with both exporters: {exc2}") from exc2
        save_model(onnx.load(raw, load_external_data=True), path, external_data_threshold)
    return path


def _with_rows(model: torch.nn.Module, args: tuple[torch.Tensor | None, ...]
               ) -> tuple[torch.nn.Module, list[str]]:
    """The module to trace and its outputs: with the read rows where the head has them, else the scores alone."""
    why = getattr(model, "why_no_rows", lambda: "not a ScoringModule")()
    if why is None:
        try:
            with torch.no_grad():
                model.forward_with_rows(*args)  # type: ignore[operator]
            return WithRows(model), ["logits", ROWS_OUTPUT]  # type: ignore[arg-type]
        except BundleError as exc:
            why = str(exc)
    log.info("exporting the scores without read rows (no personal rewards from this export): %s", why)
    return model, ["logits"]


def save_model(proto: onnx.ModelProto, path: Path, external_data_threshold: int = TWO_GB) -> None:
    """Save one model file; a model whose weights reach the threshold keeps them in ``<name>.data`` beside it.

    Protobuf cannot serialise a message over 2 GB, so large models must use external data.
    """
    domains = {n.domain for n in proto.graph.node} - {"", "ai.onnx"}
    imported = {o.domain for o in proto.opset_import}
    for domain in sorted(domains - imported):  # fused contrib ops (com.microsoft) need their domain declared
        proto.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    weight_bytes = sum(len(t.raw_data) for t in proto.graph.initializer)
    data_file = path.with_name(path.name + ".data")
    data_file.unlink(missing_ok=True)
    if weight_bytes >= external_data_threshold:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_file.name, size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))
    onnx.checker.check_model(str(path))
