"""The numeric formats a bundle can be scored in: the ONNX variants export writes, and the checkpoint's dtypes.

Export writes the ONNX variants (where each file goes, what the card records as its dtype); the service's
backend table (:mod:`service.engines`) says which backend runs which; ``eval`` and ``compare`` offer them as
choices. This table is the one place they are named.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OnnxVariant:
    """An exported ONNX variant of a bundle."""

    name: str
    file: str
    """Where export writes it, relative to the bundle."""
    dtype: str
    """What the card records about its numbers."""


ONNX_VARIANTS: dict[str, OnnxVariant] = {v.name: v for v in (
    OnnxVariant("fp32", "onnx/model.onnx", "float32"),
    OnnxVariant("fp16", "onnx/model_fp16.onnx", "float16"),
    OnnxVariant("int8", "onnx/model_int8.onnx", "int8 weights, float32 activations"),
    OnnxVariant("int8-static", "onnx/model_int8_static.onnx", "int8 weights and activations (static, calibrated)"),
)}
"""Export's variants, in the order it writes them."""

TORCH_DTYPES: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
"""The checkpoint's dtypes the torch backend serves: variant name → torch dtype name."""

VARIANT_NAMES: tuple[str, ...] = tuple(dict.fromkeys([*ONNX_VARIANTS, *TORCH_DTYPES]))
"""Every variant name a backend serves."""
