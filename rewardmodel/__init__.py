"""rewardmodel: the contract shared by training, export and serving.

It holds the bundle card (``reward_model.json``) and its scoring spec, the one formatting function that turns a
(prompt, completion) into model input, preference-record parsing, and pairwise metrics. It imports no stage
package and no torch at module load, so the onnxruntime serving image can use it as is; its torch-side modules
(loading a checkpoint as its spec says, importing foreign reward models) import torch when called.
"""

from rewardmodel.batching import PaddedBatch, pad_batch, score_positions
from rewardmodel.card import (
    CARD_NAME,
    FORMAT_VERSION,
    BundleCard,
    Normalization,
    VerifiedFiles,
    read_card,
    write_card,
)
from rewardmodel.conversation import Message, Prompt, split_conversation, split_transcript_pair
from rewardmodel.errors import BundleError, DataError, FormatError, RewardModelError
from rewardmodel.formatting import EncodedInput, Formatter, load_tokenizer, split_budget
from rewardmodel.head import HeadSpec, OutputLayout
from rewardmodel.metrics import PairwiseReport, pairwise_report
from rewardmodel.records import PointLabel, PreferenceExample, PreferencePair, merge_pointwise, parse_record
from rewardmodel.spec import FormatSpec, SpecialToken, StepSpec

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
    "HeadSpec",
    "Message",
    "Normalization",
    "OutputLayout",
    "PaddedBatch",
    "PairwiseReport",
    "PointLabel",
    "PreferenceExample",
    "PreferencePair",
    "Prompt",
    "RewardModelError",
    "SpecialToken",
    "StepSpec",
    "VerifiedFiles",
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
