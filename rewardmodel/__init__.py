"""rewardmodel: the contract shared by training, export and serving.

It holds the bundle card (``reward_model.json``), the one formatting function that turns a
(prompt, completion) into model input, preference-record parsing, and pairwise metrics. It imports
no stage package and no torch, so the onnxruntime serving image can use it as is.
"""

from rewardmodel.batching import PaddedBatch, pad_batch, score_positions
from rewardmodel.card import CARD_NAME, FORMAT_VERSION, BundleCard, Normalization, read_card, write_card
from rewardmodel.conversation import Message, Prompt, split_conversation, split_transcript_pair
from rewardmodel.errors import BundleError, DataError, FormatError, RewardModelError
from rewardmodel.formatting import EncodedInput, FormatSpec, Formatter, SpecialToken, load_tokenizer, split_budget
from rewardmodel.metrics import PairwiseReport, pairwise_report
from rewardmodel.records import PointLabel, PreferenceExample, PreferencePair, merge_pointwise, parse_record

__all__ = [
    "CARD_NAME",
    "FORMAT_VERSION",
    "BundleCard",
    "BundleError",
    "DataError",
    "EncodedInput",
    "FormatError",
    "FormatSpec",
    "Formatter",
    "Message",
    "Normalization",
    "PaddedBatch",
    "PairwiseReport",
    "PointLabel",
    "PreferenceExample",
    "PreferencePair",
    "Prompt",
    "RewardModelError",
    "SpecialToken",
    "load_tokenizer",
    "merge_pointwise",
    "pad_batch",
    "pairwise_report",
    "parse_record",
    "read_card",
    "score_positions",
    "split_budget",
    "split_conversation",
    "split_transcript_pair",
    "write_card",
]
