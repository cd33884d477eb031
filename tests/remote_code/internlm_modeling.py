"""A reward model with its own code that reads a reward token, written after internlm2-reward's
``InternLM2ForRewardModel`` (a Llama body stands in for InternLM2's): the conversation rendered by the chat template,
encoded without special tokens, the reward token appended, ``v_head`` read at the last attention-mask position.
Tests copy this file into a tiny model's directory as its remote code."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutputWithPast


class InternLM2StyleForRewardModel(LlamaPreTrainedModel):
    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.model = LlamaModel(config)
        self.v_head = nn.Linear(config.hidden_size, 1, bias=False)
        self.reward_token_id = config.reward_token_id
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs: Any) -> SequenceClassifierOutputWithPast:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask)
        hidden_states = self.v_head(outputs[0])
        assert attention_mask is not None
        ends = attention_mask.cumsum(dim=1).argmax(dim=1).view(-1, 1)
        reward_scores = torch.gather(hidden_states.squeeze(-1), 1, ends)
        return SequenceClassifierOutputWithPast(logits=reward_scores)

    @torch.no_grad()
    def get_score(self, tokenizer: Any, conversation: list[dict[str, str]], **kwargs: Any) -> float:
        conversation_str = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)
        input_ids = tokenizer.encode(conversation_str, return_tensors="pt", add_special_tokens=False)
        input_ids = torch.cat([input_ids, torch.tensor([[self.reward_token_id]], dtype=torch.long)], dim=1)
        attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        outputs = self.forward(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device))
        return float(outputs[0][0].cpu().item())
