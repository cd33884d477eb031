"""The ``rewardserve`` command: ``train``, ``eval``, ``export``, ``serve``, ``demo``, ``feedback``, ``compare``,
``import``, ``monitor``, ``personalize``, ``retrain``.

This module only parses arguments and dispatches; each stage package is imported lazily inside its
subcommand, so ``rewardserve --help`` is instant and a serving install never imports torch for it.
Errors of the contract (:class:`rewardmodel.RewardModelError`) end the command with exit code 2 and a
one-line message; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feedback.errors import FeedbackError
from rewardmodel import RewardModelError
from rewardmodel.variants import ONNX_VARIANTS
from rewardserve.compare_cli import add_compare
from rewardserve.feedback_cli import add_feedback
from rewardserve.import_cli import add_import
from rewardserve.monitor_cli import add_monitor
from rewardserve.personalize_cli import add_personalize
from rewardserve.retrain_cli import add_retrain
from service.errors import ServiceError

DEMO_BUNDLE = "demo-minilm"


def default_home() -> Path:
    """Where `rewardserve demo` keeps its bundle: ``$REWARDSERVE_HOME`` or ``~/.cache/rewardserve``."""
    return Path(os.environ.get("REWARDSERVE_HOME") or Path.home() / ".cache" / "rewardserve")


def _add_train(sub: argparse._SubParsersAction) -> None:
    from training.config import config_fields  # light: no torch

    p = sub.add_parser("train", help="train a reward model from preference data and write a bundle")
    p.add_argument("--config", help="YAML or JSON file with the settings below (flags override it)")
    p.add_argument("--preset", choices=["demo", "demo-criteria"],
                   help="start from a named preset (demo: MiniLM on the demo set; demo-criteria: a criteria model "
                        "of on_topic, complete, polite and correct on the same set)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_flags(p, config_fields())
    p.set_defaults(func=_cmd_train)


Field = tuple[str, Any, str, "tuple[str, ...] | None"]
"""(name, default, description, choices) of a settings field that becomes a flag."""


def _add_flags(p: argparse.ArgumentParser, fields: Sequence[Field], defaults: dict[str, Any] | None = None) -> None:
    """One flag per field, its help the field's description and its default (``defaults`` override the
    field's own, as the command applies them). Flags default to None so that unset ones are told apart."""
    for name, default, description, choices in fields:
        default = (defaults or {}).get(name, default)
        flag = "--" + name.replace("_", "-")
        text = description.replace("%", "%%")  # argparse formats help with %-substitution
        if isinstance(default, tuple):  # a list setting: the flag repeats
            p.add_argument(flag, dest=name, action="append", default=None, help=f"{text} (default: none; repeatable)")
        elif isinstance(default, bool):
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{text} (default: {'on' if default else 'off'})")
        else:
            shown = "none" if default in (None, "") else repr(default)
            p.add_argument(flag, dest=name, type=str if default is None else type(default), default=None,
                           choices=choices, help=f"{text} (default: {shown})")


def _emit(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """The command's result: JSON, alone on stdout (libraries' chatter was sent to stderr)."""
    print(json.dumps(result, indent=2), file=args.stdout, flush=True)


def _cmd_train(args: argparse.Namespace) -> int:
    from training.config import build_config, config_fields, load_config_file
    from training.run import is_main_process, train

    overrides = {n: getattr(args, n) for n, *_ in config_fields() if getattr(args, n) is not None}
    if args.preset and "output_dir" not in overrides:
        overrides["output_dir"] = str(default_home() / (DEMO_BUNDLE if args.preset == "demo" else
                                                         f"{args.preset}-minilm"))
    file_values = load_config_file(args.config) if args.config else {}
    result = train(build_config(args.preset, file_values, overrides), progress=not args.quiet)
    if is_main_process():  # under torchrun, one result on stdout: rank 0's, whose bundle it describes
        _emit(args, result.to_dict())
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a preference file with a bundle and print pairwise metrics as JSON")
    p.add_argument("--model", required=True, help="bundle directory (written by `rewardserve train`)")
    p.add_argument("--data", required=True, help="preference data: file, dataset directory, hub name or builtin:demo")
    p.add_argument("--variant", default="torch", choices=["torch", *ONNX_VARIANTS],
                   help="the torch checkpoint, or an exported ONNX variant (run on onnxruntime; int8-static on "
                        "OpenVINO where installed)")
    p.add_argument("--split", default="train", help="split of a `datasets` source")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N examples (0: all)")
    p.add_argument("--batch-size", type=int, default=32, help="completions per forward pass")
    p.add_argument("--device", default="cpu", help="cpu or cuda (torch device; CUDA provider for ONNX)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the bundle's own Python code (torch)")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from rewardserve.evaluate import evaluate_bundle

    out = evaluate_bundle(args.model, args.data, args.split, args.limit, args.batch_size, args.device,
                          progress=not args.quiet, variant=args.variant, trust_remote_code=args.trust_remote_code)
    _emit(args, out)
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="add ONNX variants (fp32, fp16, int8, int8-static) to a bundle, each gated "
                                      "on parity")
    p.add_argument("--model", required=True, help="bundle directory")
    p.add_argument("--variants", default="fp32,int8", help="comma-separated: fp32 (portable), fp16 (GPU), int8 "
                                                           "(CPU, dynamic), int8-static (CPU, calibrated with NNCF; "
                                                           "the fastest with --backend openvino) (default: fp32,int8)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    p.add_argument("--calibration-data", default="", help="preference data for the parity check "
                                                          "(default: the demo set's held-out split)")
    p.add_argument("--samples", type=int, default=256, help="preference examples used for parity (default: 256)")
    p.add_argument("--calibration-items", type=int, default=300,
                   help="int8-static: completions that calibrate the activation ranges, taken from the calibration "
                        "data after the parity examples (default: 300)")
    p.add_argument("--force", action="store_true", help="write variants that miss their parity thresholds")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the bundle's own Python code (a model "
                                                                    "imported with it)")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from export.run import ExportSettings, export_bundle

    settings = ExportSettings(variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
                              opset=args.opset, calibration_data=args.calibration_data, samples=args.samples,
                              calibration_items=args.calibration_items, force=args.force,
                              trust_remote_code=args.trust_remote_code)
    card = export_bundle(args.model, settings)
    _emit(args, {"model": card.name, "onnx": card.onnx})
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a bundle over HTTP (batched /score, /rerank, adapters, /metrics)",
                       description="Every flag is also an environment variable REWARDSERVE_<NAME> (flags win). "
                                   "API keys are set by environment only: REWARDSERVE_API_KEYS=key1,key2.")
    _add_setting_flags(p)
    p.set_defaults(func=_cmd_serve)


def _add_setting_flags(p: argparse.ArgumentParser, skip: tuple[str, ...] = (), **defaults: Any) -> None:
    from service.settings import setting_fields

    _add_flags(p, [f for f in setting_fields() if f[0] not in skip], defaults)


def service_settings(args: argparse.Namespace, **defaults: Any) -> Any:
    """The one frozen :class:`~service.settings.ServiceSettings`: flags over environment over ``defaults``."""
    from pydantic import ValidationError

    from service.settings import ServiceSettings, setting_fields

    flags = {n: getattr(args, n) for n, *_ in setting_fields() if getattr(args, n, None) is not None}
    env_set = {n for n in defaults if f"REWARDSERVE_{n.upper()}" in os.environ}
    try:
        return ServiceSettings(**{k: v for k, v in defaults.items() if k not in env_set}, **flags)
    except ValidationError as exc:  # name the setting and the rule; never echo the input (it may hold keys)
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise RewardModelError(f"invalid serve settings: {problems}") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from service.server import serve

    return serve(service_settings(args))


DEMO_SERVE: dict[str, Any] = {}
"""Serve settings the demo sets beyond the serve defaults: none. The default ``--backend auto --variant auto`` times
the demo's variants (fp32, dynamic int8, static int8 on onnxruntime and OpenVINO) on this machine and serves the
fastest: no fixed engine is fastest on every CPU (static int8 on OpenVINO won on AVX-512 VNNI, lost on AVX2)."""


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build the demo reward model (MiniLM on generated preferences), export it to "
                                    "ONNX, evaluate every variant, then serve it (the fastest engine on this "
                                    "machine), taking feedback into $REWARDSERVE_HOME/feedback.db")
    p.add_argument("--retrain", action="store_true", help="train again even if the demo bundle exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-serve", dest="serve", action="store_false", help="stop after the evaluation")
    _add_setting_flags(p, skip=("model", "models_file"), feedback_db="$REWARDSERVE_HOME/feedback.db", **DEMO_SERVE)
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from rewardmodel.sources import DEMO_DATA
    from rewardserve.demo import DEMO_ANNOTATOR, LOOPBACK, build_demo, seed_labeling

    home = args.home or default_home()
    out = build_demo(home / DEMO_BUNDLE, args.retrain, progress=not args.quiet)
    bundle = Path(out["bundle"])
    _emit(args, out)
    if not args.serve:
        return 0
    from service.server import serve

    settings = service_settings(args, model=bundle, feedback_db=str(home / "feedback.db"), **DEMO_SERVE)
    if settings.host in LOOPBACK:  # a known annotator key, on this machine only
        settings = service_settings(args, model=bundle, feedback_db=str(home / "feedback.db"),
                                    annotator_keys=DEMO_ANNOTATOR, **DEMO_SERVE)
    queued = seed_labeling(str(settings.feedback_db), f"{DEMO_DATA}:heldout", settings.label_annotations)
    print(f"serving {bundle} on http://{settings.host}:{settings.port} (docs at /docs; feedback into "
          f"{settings.feedback_db}; Ctrl-C stops)", file=sys.stderr)
    if settings.annotator_keys == DEMO_ANNOTATOR:
        print(f"label at http://{settings.host}:{settings.port}/label with the annotator key 'demo' "
              f"({queued} demo items newly queued)", file=sys.stderr)
    return serve(settings)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(prog="rewardserve", description="Train, export and serve reward models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    _add_export(sub)
    _add_serve(sub)
    _add_demo(sub)
    add_feedback(sub, _emit)
    add_compare(sub, _emit)
    add_import(sub, _emit, default_home)
    add_monitor(sub)
    add_personalize(sub, _emit)
    add_retrain(sub, _emit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rewardserve`` console script."""
    args = build_parser().parse_args(argv)
    # our packages log progress at INFO; libraries (onnxruntime's quantizer logs every tensor) stay at WARNING
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("rewardmodel", "training", "export", "service", "rewardserve"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        # transformers' Trainer prints its logs to stdout; keep stdout for the command's JSON result
        args.stdout = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            return int(args.func(args))
    except (RewardModelError, ServiceError, FeedbackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
