"""``rewardserve import``: a reward model from the Hub or another trainer becomes a bundle, once its scoring spec
reproduces the model's own reference scores (:mod:`rewardmodel.importer`).

Exit codes: 0 imported; 1 the proof refused the spec (the difference is named, nothing written); 2 the source
cannot be imported (missing files, an unsupported architecture, remote code without the flag, pickle-only
weights, a head whose outputs do not fit its family), also with nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rewardmodel import CARD_NAME


def add_import(sub: argparse._SubParsersAction, emit: Any, home: Any) -> None:
    """Register ``import``; ``emit(args, result)`` prints its JSON result, ``home()`` is $REWARDSERVE_HOME."""
    p = sub.add_parser("import", help="import a reward model rewardserve did not train (a Hugging Face directory or "
                                      "hub name: Skywork, ArmoRM, internlm2, DeBERTa, OpenRLHF, TRL, PRMs) into a "
                                      "bundle, proving its scores against the model's own code first")
    p.add_argument("source", help="a local model directory, or a hub name (owner/name) in the Hugging Face cache "
                                  "(offline with HF_HUB_OFFLINE=1)")
    p.add_argument("--output-dir", required=True, type=Path, help="the bundle to write (must not exist)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the model's own Python code (its auto_map); read it first")
    p.add_argument("--reference", help="preference data whose completions' rewards give the card's normalization "
                                       "(mean, std): a file, builtin:demo, or a feedback store URL")
    p.add_argument("--max-length", type=int, default=0,
                   help="tokens per item (default: the model's position table, at most 4096)")
    p.add_argument("--step-token", default="", help="process reward models: the step tag (default: <extra_0> "
                                                    "where the vocabulary has it)")
    p.add_argument("--step-separator", default="\n\n", help="process reward models: what separates a "
                                                             "completion's steps (default: a blank line)")
    p.add_argument("--max-steps", type=int, default=64, help="process reward models: most steps in one item")
    p.add_argument("--aggregate", choices=["min", "last", "mean"], default="min",
                   help="process reward models: an item's reward from its step rewards (default: min)")
    p.add_argument("--device", default="cpu", help="where the proof runs the model (cpu, cuda)")
    p.add_argument("--name", default="", help="the bundle's name (default: the output directory's)")
    p.set_defaults(func=lambda args: _cmd_import(args, emit, home))


def _cmd_import(args: argparse.Namespace, emit: Any, home: Any) -> int:
    from rewardmodel.card import VerifiedFiles
    from rewardmodel.families import ImportOptions
    from rewardmodel.importer import ImportRefused, import_model

    options = ImportOptions(trust_remote_code=args.trust_remote_code, max_length=args.max_length,
                            step_token=args.step_token, step_separator=args.step_separator,
                            max_steps=args.max_steps, aggregate=args.aggregate)
    try:
        card = import_model(args.source, args.output_dir, options, args.reference, args.device,
                            VerifiedFiles(home() / "verified"), args.name,
                            log_step=lambda message: print(message, file=sys.stderr))
    except ImportRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    spec, head = card.formatting, card.head
    emit(args, {"bundle": str(args.output_dir), "card": str(args.output_dir / CARD_NAME), "name": card.name,
                "family": card.source["family"], "proof": card.source["proof"],
                "scoring": {"template": spec.template, "bos": spec.bos, "read": spec.read, "head": head.kind,
                            "module": head.module, "suffix_ids": list(spec.suffix_ids), "max_length": spec.max_length,
                            "outputs": card.layout.width},
                "normalization": None if card.normalization is None else
                {"mean": card.normalization.mean, "std": card.normalization.std},
                "next": f"rewardserve serve --model {args.output_dir} (torch), or rewardserve export --model "
                        f"{args.output_dir} for ONNX"})
    return 0
