"""The scoring spec's head as a torch module: one ``forward`` for the torch backend and the exported ONNX graph.

Imported only where torch is (see :mod:`rewardmodel.torch_model`). Positions come in as a tensor
(:func:`rewardmodel.batching.read_positions` computes them from the ids), so the graph holds no search of its
own: the same gathers run in torch, onnxruntime and OpenVINO. Heads read at positions run only on the rows
they read, not on every token.

For personal rewards the module also returns, when asked, the *read row* of each item: the input of the head's
final linear layer, the vector the reward is a linear function of (:mod:`rewardmodel.personal`). A forward
pre-hook on that layer catches it, per thread, so concurrent calls (streams) never see each other's rows.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from rewardmodel.errors import BundleError
from rewardmodel.head import HeadSpec


def submodule(model: Any, path: str) -> Any:
    """``model``'s attribute at dotted ``path``; a card naming one the checkpoint lacks is refused."""
    target = model
    for part in path.split("."):
        if not hasattr(target, part):
            raise BundleError(f"the checkpoint's {type(model).__name__} has no {path!r}, which its card's head "
                              "names; re-import the model")
        target = getattr(target, part)
    return target


def at(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``hidden`` ``(rows, seq, H)`` at ``positions`` ``(rows, k)`` (clamped to 0 where -1): ``(rows, k, H)``."""
    index = positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    return hidden.gather(1, index)


def final_linear(module: Any, outputs: int | None = None) -> torch.nn.Linear | None:
    """The last ``Linear`` of ``module`` (with ``outputs`` outputs, when given): the layer a reward is read from."""
    found = None
    for sub in module.modules():
        if isinstance(sub, torch.nn.Linear) and (outputs is None or sub.out_features == outputs):
            found = sub
    return found


class ScoringModule(torch.nn.Module):
    """A loaded checkpoint scoring as its :class:`~rewardmodel.head.HeadSpec` says; returns ``(rows, width)``."""

    def __init__(self, model: Any, head: HeadSpec) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.head = head
        self.no_cache = "use_cache" in model.config.to_dict()
        """The model takes ``use_cache``: scoring passes False (no KV cache built or returned)."""
        if head.kind != "classifier":
            self.body = submodule(model, head.backbone)
            self.read = submodule(model, head.module)
        if head.kind == "gated":
            self.gate = submodule(model, head.gate)
            self.transform = submodule(model, head.transform) if head.transform else None
        self._rows = threading.local()
        self.reader = self._reader()
        if self.reader is not None:
            self.reader.register_forward_pre_hook(self._catch)

    def _reader(self) -> torch.nn.Linear | None:
        """The final linear layer whose input is the read row, or None where the reward is not linear in one row
        (gated and step heads)."""
        if self.head.kind == "classifier":
            return final_linear(self.model, int(getattr(self.config, "num_labels", 1)))
        if self.head.kind == "linear":
            return final_linear(self.read)
        return None

    def _catch(self, _module: Any, args: tuple[Any, ...]) -> None:
        self._rows.value = args[0]

    def why_no_rows(self) -> str | None:
        """Why this head cannot return its read rows (None: it can)."""
        if self.reader is None:
            return (f"a {self.head.kind} head's reward is not a linear function of one row (personal rewards need "
                    "a classifier or linear head)")
        return None

    def forward_with_rows(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          token_type_ids: torch.Tensor | None = None, positions: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """(output rows, read rows ``(rows, H)``): the outputs and the vector the head's final layer read."""
        if (why := self.why_no_rows()) is not None:
            raise BundleError(why)
        self._rows.value = None
        out = self.forward(input_ids, attention_mask, token_type_ids, positions)
        rows = self.caught_rows()
        pad = getattr(self.config, "pad_token_id", None)
        if rows is not None and rows.dim() == 3 and self.head.kind == "classifier" and pad is not None:
            # a decoder classifier scores every token and keeps the last one that is not padding, found as
            # transformers' *ForSequenceClassification finds it
            order = torch.arange(input_ids.shape[-1], device=input_ids.device)
            last = (order * (input_ids != pad).long()).argmax(-1)
            rows = rows[torch.arange(rows.shape[0], device=rows.device), last]
        return out, read_rows(rows)

    def caught_rows(self) -> torch.Tensor | None:
        """The read rows the last forward on this thread caught (taken: a second call returns None)."""
        rows = self._rows.value
        self._rows.value = None
        if rows is not None and rows.dim() == 3 and rows.shape[1] == 1:  # a linear head reads (rows, 1, H)
            rows = rows[:, 0]
        return rows

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        """The output rows of a padded batch."""
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.no_cache:
            kwargs["use_cache"] = False  # a reward model reads one score per sequence: no KV cache built or returned
        kind = self.head.kind
        if kind == "classifier":
            return self.activate(self.model(**kwargs).logits)
        if positions is None:
            raise BundleError(f"a {kind} head reads at explicit positions: the batch carries none")
        hidden = self.body(**kwargs)[0]
        return self.head_on(at(hidden, positions), positions)

    def head_on(self, read: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """A linear, gated or step head's output rows from the hidden states it reads, ``read`` ``(rows, k, H)`` at
        ``positions`` ``(rows, k)`` (-1: none): what a padded and a packed forward share."""
        kind = self.head.kind
        if kind == "linear":
            return self.activate(self.read(read[:, :1])[:, 0])
        if kind == "gated":
            objectives = self.read(read[:, 0])
            gate = self.gate(read[:, 1])
            adjusted = objectives if self.transform is None else objectives @ self.transform
            reward = (gate * adjusted).sum(dim=1, keepdim=True)
            return torch.cat([self.activate(reward), objectives], dim=1)
        return self._steps(read, positions)

    def _steps(self, read: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``[item reward, step rewards…]``: the label's softmax probability at each step tag, 0 past the last."""
        valid = positions >= 0
        probs = torch.softmax(self.read(read).float(), dim=-1)[..., self.head.label]
        probs = torch.where(valid, probs, torch.zeros_like(probs))
        count = valid.sum(dim=1, keepdim=True)
        how = self.head.aggregate
        if how == "min":
            reward = torch.where(valid, probs, torch.ones_like(probs)).min(dim=1, keepdim=True).values
        elif how == "last":
            reward = probs.gather(1, (count - 1).clamp(min=0))
        else:
            reward = probs.sum(dim=1, keepdim=True) / count.clamp(min=1)
        return torch.cat([reward, probs], dim=1)

    def activate(self, reward: torch.Tensor) -> torch.Tensor:
        """The head's activation on raw rewards (sigmoid or none)."""
        return torch.sigmoid(reward) if self.head.activation == "sigmoid" else reward


def read_rows(rows: torch.Tensor | None) -> torch.Tensor:
    """``rows`` as one read row per item ``(rows, H)``, or a :class:`BundleError` saying why there is none."""
    if rows is None or rows.dim() != 2:
        raise BundleError("the head's final layer reads every token, not one row per item (personal rewards need "
                          "a pooled row: import the model with a linear head)")
    return rows


class WithRows(torch.nn.Module):
    """A :class:`ScoringModule` whose forward returns (outputs, read rows): what export traces into ONNX."""

    def __init__(self, scoring: ScoringModule) -> None:
        super().__init__()
        self.scoring = scoring

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, positions: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs of a padded batch."""
        return self.scoring.forward_with_rows(input_ids, attention_mask, token_type_ids, positions)
