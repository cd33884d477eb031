"""OpenRLHF's own code, run in a subprocess (``python -m tests.openrlhf_reference``): it builds a reward-model
checkpoint the way OpenRLHF's trainer saves one, and scores conversations the way OpenRLHF trains on them.

OpenRLHF 0.11.2 pins a GPU training stack (deepspeed, flash-attn) that ``tests/full.sh`` does not install; its
``openrlhf.models`` package imports both at module level although the plain reward path (no packing, no ZeRO-3)
never calls them. Placeholders in ``sys.modules`` let it import; they live in this subprocess only, so no other
test sees them. Under transformers 5, OpenRLHF's ``from_pretrained`` leaves its non-persistent ``mean``/``std``
buffers uninitialised (OpenRLHF#1343), so they are refilled from the config, as OpenRLHF's ``__init__`` meant.

``build BASE OUT PREFIX MEAN STD``: a reward model on the causal LM in BASE (a fresh value head named PREFIX),
saved to OUT with ``value_head_prefix``, ``mean`` and ``std`` in its config, as ``train_rm.py`` saves it.
``score DIR NORMALIZE CHAT`` (probes as JSON on stdin: ``[[messages, reply], …]``): each conversation through
OpenRLHF's ``RewardDataset`` (its chat template, ``" " + EOS``, no special tokens, the last id EOS) and its
reward model; prints ``[[ids, reward], …]``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types
from typing import Any


def _placeholder(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    # transformers probes importlib.util.find_spec(name); without dist-info it still reports the package missing
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []
    return module


def _unavailable(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("flash_attn is not installed (OpenRLHF's packing needs it)")


def _import_openrlhf() -> Any:
    if importlib.util.find_spec("deepspeed") is None:
        sys.modules["deepspeed"] = _placeholder("deepspeed")
    if importlib.util.find_spec("flash_attn") is None:
        padding, distributed = _placeholder("flash_attn.bert_padding"), _placeholder("flash_attn.utils.distributed")
        for name in ("index_first_axis", "pad_input", "rearrange", "unpad_input"):
            setattr(padding, name, _unavailable)
        distributed.all_gather = _unavailable  # type: ignore[attr-defined]
        sys.modules.update({"flash_attn": _placeholder("flash_attn"), "flash_attn.bert_padding": padding,
                            "flash_attn.utils": _placeholder("flash_attn.utils"),
                            "flash_attn.utils.distributed": distributed})
    import openrlhf.utils.utils as utils
    import torch

    original = utils.convert_to_torch_dtype  # OpenRLHF accepts bf16/fp16 only; the tests run fp32
    utils.convert_to_torch_dtype = lambda p: torch.float32 if p == "fp32" else original(p)
    from openrlhf import models

    return models


def build(base: str, out: str, prefix: str, mean: float, std: float) -> None:
    import torch

    models = _import_openrlhf()
    torch.manual_seed(1)
    model = models.get_llm_for_sequence_regression(base, "reward", param_dtype="fp32", attn_implementation="eager",
                                                   init_value_head=True, value_head_prefix=prefix)
    model.config.value_head_prefix = prefix
    model.config.mean, model.config.std = mean, std
    model.save_pretrained(out)


def score(directory: str, normalize: bool, chat: bool, probes: list[Any]) -> list[Any]:
    import torch
    from datasets import Dataset
    from openrlhf.datasets import RewardDataset
    from transformers import AutoTokenizer

    models = _import_openrlhf()
    model = models.get_llm_for_sequence_regression(directory, "reward", param_dtype="fp32",
                                                   attn_implementation="eager", normalize_reward=normalize).eval()
    model.mean.fill_(getattr(model.config, "mean", 0.0))
    model.std.fill_(getattr(model.config, "std", 1.0))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    data = types.SimpleNamespace(prompt_key="prompt", chosen_key="chosen", rejected_key="rejected",
                                 apply_chat_template=chat, tokenizer_chat_template=None)
    strategy = types.SimpleNamespace(args=types.SimpleNamespace(data=data))
    if chat:
        rows = {"prompt": [p for p, _ in probes], "chosen": [[{"role": "assistant", "content": c}] for _, c in probes]}
    else:
        rows = {"prompt": [p[-1]["content"] for p, _ in probes], "chosen": [c for _, c in probes]}
    dataset = RewardDataset(Dataset.from_dict({**rows, "rejected": rows["chosen"]}), tokenizer, 4096, strategy,
                            num_processors=1)
    out = []
    for i in range(len(dataset)):
        ids, mask, *_ = dataset[i]
        with torch.no_grad():
            out.append([ids[0].tolist(), float(model(ids, mask)[0])])
    return out


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "build":
        build(args[0], args[1], args[2], float(args[3]), float(args[4]))
    else:
        print(json.dumps(score(args[0], args[1] == "1", args[2] == "1", json.load(sys.stdin))))
