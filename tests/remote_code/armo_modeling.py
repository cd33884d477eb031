"""A gated multi-objective reward model with its own code, written after ArmoRM's ``modeling_custom.py``
(RLHFlow/ArmoRM-Llama3-8B-v0.1): objectives from a regression layer at the last token (first pad minus one),
a gating network at the start of the last assistant-header pattern, a transform matrix, the gated sum as the
score. Tests copy this file into a tiny model's directory as its remote code; ``token_pattern`` is filled in
with the ids of the test tokenizer's header."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.utils import ModelOutput

token_pattern: list[int] = []  # the ids of "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"


def find_token_for_gating(lst: list[int]) -> int:
    """Find the last occurrence of a token_pattern in a list."""
    token_pattern_len = len(token_pattern)
    search_end = len(lst)
    for j in range(search_end - token_pattern_len, -1, -1):
        if lst[j:j + token_pattern_len] == token_pattern:
            return j
    raise ValueError("Token pattern not found in the list.")


@dataclass
class CustomOutput(ModelOutput):
    rewards: torch.FloatTensor | None = None
    hidden_state: torch.FloatTensor | None = None
    prompt_embedding: torch.FloatTensor | None = None
    gating_output: torch.FloatTensor | None = None
    score: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class GatingNetwork(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, temperature: float = 10,
                 logit_scale: float = 1.0, hidden_dim: int = 1024, n_hidden: int = 3) -> None:
        super().__init__()
        self.temperature = temperature
        self.logit_scale = nn.Parameter(torch.ones(1) * logit_scale)
        layers: list[nn.Module] = []
        for _ in range(n_hidden):
            layers.append(nn.Linear(in_features, hidden_dim))
            in_features = hidden_dim
        layers.append(nn.Linear(in_features, out_features, bias=bias))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        x = F.softmax(x / self.temperature, dim=1)
        return x * self.logit_scale[0]


class LlamaForRewardModelWithGating(LlamaPreTrainedModel):
    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = LlamaModel(config)
        config_dict = config.to_dict()
        self.num_objectives = config_dict.get("num_objectives", 19)
        self.regression_layer = nn.Linear(config.hidden_size, self.num_objectives, bias=False)
        self.post_init()
        identity = torch.zeros(self.num_objectives, self.num_objectives)
        identity[range(self.num_objectives), range(self.num_objectives)] = 1.0
        self.reward_transform_matrix = nn.Parameter(identity)
        self.reward_transform_matrix.requires_grad = False
        self.gating = GatingNetwork(config.hidden_size, config.num_objectives,
                                    temperature=config_dict.get("gating_temperature", 10),
                                    hidden_dim=config_dict.get("gating_hidden_dim", 1024),
                                    n_hidden=config_dict.get("gating_n_hidden", 3))

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                **kwargs: Any) -> CustomOutput:
        transformer_outputs = self.model(input_ids, attention_mask=attention_mask)
        tokens_hidden_states = transformer_outputs[0]
        batch_size = input_ids.shape[0]
        if self.config.pad_token_id is None and batch_size != 1:
            raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined.")
        if self.config.pad_token_id is None:
            sequence_lengths: Any = -1
        else:
            sequence_lengths = torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1
            sequence_lengths = sequence_lengths % input_ids.shape[-1]
        dummy_iterator = torch.arange(batch_size)
        hidden_states = tokens_hidden_states[dummy_iterator, sequence_lengths]
        rewards = self.regression_layer(hidden_states)
        gating_token_positions = [find_token_for_gating(ids.tolist()) for ids in input_ids]
        prompt_embedding = tokens_hidden_states[dummy_iterator, gating_token_positions, :]
        gating_output = self.gating(prompt_embedding)
        rewards_adjusted = rewards @ self.reward_transform_matrix
        score = torch.sum(gating_output * rewards_adjusted, dim=1)
        return CustomOutput(rewards=rewards, hidden_state=hidden_states, prompt_embedding=prompt_embedding,
                            gating_output=gating_output, score=score, logits=score)
