"""The scoring spec's output half: the head that turns hidden states into outputs, and their post-processing.

:class:`HeadSpec` says how a bundle's checkpoint is loaded and which of its modules make the score; the
backend runs it (torch, or the ONNX graph exported from the same torch module), and :class:`OutputLayout`
reads the rows it returns. Kinds:

* ``classifier`` — the model's own ``*ForSequenceClassification`` forward: its logits, read where the model
  reads them (``rewardserve train``'s bundles, encoders).
* ``linear`` — the backbone's last hidden state at the spec's read position, through the head module
  (``score``, ``value_head``, ``v_head``): decoder classifiers, OpenRLHF and internlm2-style checkpoints.
* ``gated`` — ArmoRM-style: objectives from a regression layer at the read position, a gating network at the
  gate position, the reward their gated sum; the row is ``[reward, objective 1, …]``.
* ``steps`` — a process reward model: the head's per-token logits at each step tag, softmax, the ``label``'s
  probability is the step reward; the row is ``[item reward, step 1, …, step max_steps]`` (0 past the last).

Post-processing is none unless the card says: ``activation`` (sigmoid) applies to the reward outputs, inside the
exported graph too. Normalization, ``(r − mean) / std``, is the card's (``normalization``: from a reference set,
or OpenRLHF's config), applied when a request or the server asks for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rewardmodel.criteria import Criteria
from rewardmodel.errors import BundleError
from rewardmodel.spec import FormatSpec

HeadKind = Literal["classifier", "linear", "gated", "steps"]
HEAD_KINDS: tuple[str, ...] = ("classifier", "linear", "gated", "steps")
OPENRLHF = "openrlhf"
"""The ``auto_class`` of OpenRLHF checkpoints: its RewardModel class, rebuilt by :mod:`rewardmodel.openrlhf`."""


@dataclass(frozen=True)
class HeadSpec:
    """How a bundle's checkpoint is loaded and scored; stored as ``head`` in ``reward_model.json``."""

    kind: HeadKind = "classifier"
    auto_class: str = "AutoModelForSequenceClassification"
    """The transformers auto class that loads the checkpoint (its own code's with ``trust_remote_code``), or
    ``openrlhf``."""
    trust_remote_code: bool = False
    """The checkpoint's own Python code is needed to load it (the operator must allow it)."""
    backbone: str = ""
    """Attribute of the loaded model holding the transformer body (its ``base_model_prefix``)."""
    module: str = ""
    """Attribute of the head applied at the read positions (linear, steps), or the regression layer (gated)."""
    outputs: int = 1
    """Outputs of the head: 1 for a reward, C for criteria or gated objectives, the labels of a step head."""
    gate: str = ""
    """gated: the gating network's attribute."""
    transform: str = ""
    """gated: the attribute of the objectives' transform matrix (empty: none)."""
    label: int = 1
    """steps: the label whose probability is a step's reward."""
    aggregate: Literal["min", "last", "mean"] = "min"
    """steps: an item's reward from its step rewards."""
    activation: Literal["none", "sigmoid"] = "none"
    """Applied to the reward output(s), only where the model's own usage applies it."""

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise BundleError(f"unknown head kind {self.kind!r}; expected one of {HEAD_KINDS}")
        if self.kind != "classifier" and not (self.backbone and self.module):
            raise BundleError(f"a {self.kind} head names its backbone and head modules")
        if self.kind == "gated" and not self.gate:
            raise BundleError("a gated head names its gating network")
        if self.kind == "steps" and not 0 <= self.label < self.outputs:
            raise BundleError(f"the step label {self.label} is not one of the head's {self.outputs} outputs")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the bundle card."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadSpec:
        """Inverse of :meth:`to_dict`; raises :class:`BundleError` on a malformed record."""
        try:
            return cls(**data)
        except TypeError as exc:
            raise BundleError(f"the card's 'head' record is malformed ({exc}); re-import the model") from exc


@dataclass(frozen=True)
class OutputLayout:
    """What the columns of a backend's output row are, and how they make a reward."""

    head: HeadSpec
    criteria: Criteria | None
    max_steps: int = 0

    @classmethod
    def of(cls, head: HeadSpec, formatting: FormatSpec, criteria: Criteria | None) -> OutputLayout:
        """The layout of a card's head, formatting and criteria."""
        if head.kind == "gated" and (criteria is None or len(criteria.names) != head.outputs):
            raise BundleError("a gated head's card names one criterion per objective")
        if head.kind == "steps" and formatting.steps is None:
            raise BundleError("a steps head needs the formatting's step tags")
        return cls(head, criteria, formatting.steps.max_steps if formatting.steps else 0)

    @property
    def width(self) -> int:
        """Outputs per row."""
        if self.head.kind == "gated":
            return 1 + self.head.outputs
        if self.head.kind == "steps":
            return 1 + self.max_steps
        return len(self.criteria.names) if self.criteria else 1

    @property
    def weighted(self) -> bool:
        """The reward is the criteria's weighted sum (a criteria model), not an output of its own."""
        return self.criteria is not None and self.head.kind != "gated"

    def reward(self, outputs: npt.NDArray[np.float64], weights: Sequence[float] | None = None
               ) -> npt.NDArray[np.float64]:
        """The scalar reward of ``(rows, width)`` outputs: the reward output, or the criteria's weighted sum
        (``weights`` in criterion order; default: the card's). A gated model with weights sums its objectives
        with them instead of its gate."""
        if self.criteria is not None and (self.weighted or weights is not None):
            vector = np.asarray(weights if weights is not None else self.criteria.weight_vector(), dtype=np.float64)
            return self.criteria_outputs(outputs) @ vector
        return outputs[:, 0]

    def criteria_outputs(self, outputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``(rows, C)``: each criterion's output."""
        return outputs[:, 1:] if self.head.kind == "gated" else outputs

    def steps(self, outputs: npt.NDArray[np.float64], counts: Sequence[int]) -> list[list[float]] | None:
        """Each row's step rewards (its first ``counts[i]`` steps), or None for a model without steps."""
        if self.head.kind != "steps":
            return None
        return [[float(v) for v in row[1:1 + n]] for row, n in zip(outputs, counts, strict=True)]
