"""A process reward model with its own code, written after Qwen2.5-Math-PRM's ``Qwen2ForProcessRewardModel``: a Qwen2
body and a two-layer ``score`` head (Linear, ReLU, Linear to 2 labels) applied to every token; the model card reads
softmax label 1 at each step tag. Tests copy this file into a tiny model's directory as its remote code."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import Qwen2Model, Qwen2PreTrainedModel
from transformers.modeling_outputs import TokenClassifierOutput


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.num_labels = 2
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(),
                                   nn.Linear(config.hidden_size, self.num_labels))
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs: Any) -> TokenClassifierOutput:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)[0]
        return TokenClassifierOutput(logits=self.score(hidden))
