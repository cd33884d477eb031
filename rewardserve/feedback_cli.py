"""``rewardserve feedback export | import | stats | prune | migrate``: the feedback store from the command line.

Every subcommand takes ``--db`` (a SQLite path, ``sqlite:///…`` or ``postgresql://…``; default
``$REWARDSERVE_FEEDBACK_DB``) and prints its result as JSON on stdout.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

DB_HELP = "the feedback database: a SQLite path, sqlite:///… or postgresql://… (default: $REWARDSERVE_FEEDBACK_DB)"


def add_feedback(sub: argparse._SubParsersAction, emit: Any) -> None:
    """Register ``feedback`` and its subcommands; ``emit(args, result)`` prints a result."""
    p = sub.add_parser("feedback", help="the feedback store: export for training, stats, retention and erasure")
    cmds = p.add_subparsers(dest="feedback_command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        c = cmds.add_parser(name, help=help_text)
        c.add_argument("--db", default=os.environ.get("REWARDSERVE_FEEDBACK_DB"), help=DB_HELP)
        return c

    def window(c: argparse.ArgumentParser) -> None:
        c.add_argument("--since", help="only events judged at or after this RFC 3339 time (a date: its midnight UTC)")
        c.add_argument("--until", help="only events judged before this time")
        c.add_argument("--source", help="only events from this source (e.g. chat-ui, labeling)")
        c.add_argument("--annotator", help="only this annotator's events")

    e = command("export", "write the stored judgements as training data (.jsonl or .parquet), or the labeling "
                          "queue as Label Studio tasks (--to label-studio)")
    e.add_argument("--out", required=True, type=Path, help="FILE.jsonl or FILE.parquet; with --to label-studio "
                                                           "FILE.json (its labeling config is written beside it)")
    e.add_argument("--to", choices=["training", "label-studio"], default="training",
                   help="training: judgements as training data (default); label-studio: the queue's tasks that "
                        "still need judgements, for a Label Studio project (List + Ranker)")
    e.add_argument("--label-annotations", type=int, default=2, metavar="N",
                   help="with --to label-studio: judgements each task should get (the server's "
                        "--label-annotations; default 2)")
    e.add_argument("--implicit-weight", action="append", default=[], metavar="FORM=W",
                   help="the pair weight of an implicit form (regenerate 0.5, copy 0.5, edit 0.8, continue 0.2, "
                        "abandon 0.2 by default, against 1 for a choice); 0 leaves the form out; repeat per form")
    e.add_argument("--aggregate", choices=["all", "majority"], default="all",
                   help="all: every event as it was judged; majority: one verdict per pair of completions over "
                        "all annotators of the same prompt and completions (default: all)")
    window(e)
    i = command("import", "store the pairwise and ranking judgements of a Label Studio or Argilla export")
    i.add_argument("file", type=Path, help="the tool's JSON export (a list of tasks or records) or JSON Lines")
    i.add_argument("--from", dest="tool", required=True, choices=["label-studio", "argilla"])
    i.add_argument("--prompt-field", help="the data field holding the prompt (default: the first of prompt, "
                                          "instruction, input, question, query)")
    i.add_argument("--completion-fields", default="",
                   help="comma-separated fields holding the completions: Label Studio pairwise (default "
                        "text1,text2); Argilla label questions (required there), rankings (default: the ranked "
                        "fields)")
    i.add_argument("--items-field", default="items", help="Label Studio: the List of a ranker (default items)")
    i.add_argument("--question", help="Argilla: the question holding the judgements (default: the one ranking "
                                      "question)")
    s = command("stats", "counts, inter-annotator agreement, and each reward model's live accuracy")
    window(s)
    r = command("prune", "delete events: older than --before (retention), or by annotator, or about a user "
                         "(metadata.user, for an erasure request); several criteria must all hold")
    r.add_argument("--before", help="delete events judged before this RFC 3339 time")
    r.add_argument("--annotator", help="delete this annotator's events")
    r.add_argument("--user", help="delete events whose metadata.user is this, and the user's personal-reward profiles")
    command("migrate", "create or upgrade the store's schema (Kubernetes: run it in an init container)")
    p.set_defaults(func=lambda args: _run(args, emit))


def _run(args: argparse.Namespace, emit: Any) -> int:
    from feedback.errors import FeedbackError, InvalidFeedback
    from feedback.events import utc_now
    from feedback.export import export, implicit_weights, parse_time
    from feedback.stats import feedback_stats
    from feedback.store import FeedbackStore, Filters, redact

    if not args.db:
        raise InvalidFeedback("say which database: --db PATH_OR_URL (or set REWARDSERVE_FEEDBACK_DB)")
    cmd = args.feedback_command
    # an import reads and checks the whole file before it opens (or creates) the database
    imported = _read_import(args) if cmd == "import" else None
    store = FeedbackStore(args.db, pool_size=1, must_exist=cmd not in ("migrate", "import"))
    try:
        if cmd == "migrate":
            store.migrate()
            result: dict[str, Any] = {"database": redact(store.url), "migrated": True}
        elif imported is not None:
            from feedback.interop import store_imported

            result = {"database": redact(store.url), **store_imported(store, imported, utc_now())}
        elif cmd == "export" and args.to == "label-studio":
            from feedback.labelstudio import write_label_studio
            from feedback.queue import LabelQueue

            if args.label_annotations < 1:
                raise InvalidFeedback("--label-annotations must be at least 1")
            result = write_label_studio(LabelQueue(store, args.label_annotations).pending(), args.out)
        elif cmd == "prune":
            deleted = store.prune(parse_time(args.before, "--before"), args.annotator, args.user)
            result = {"database": redact(store.url), "deleted": deleted}
        else:
            filters = Filters(since=parse_time(args.since, "--since"), until=parse_time(args.until, "--until"),
                              source=args.source, annotator=args.annotator)
            if cmd == "stats":
                result = feedback_stats(store, filters)
            else:
                report = export(store, args.out, filters, args.aggregate, implicit_weights(args.implicit_weight))
                result = {"out": str(args.out), **report.to_dict()}
    except FeedbackError as exc:  # say which database: an operator may juggle several
        raise type(exc)(f"{redact(store.url)}: {exc.message}") from None
    finally:
        store.close()
    emit(args, result)
    return 0


def _read_import(args: argparse.Namespace) -> Any:
    """The events of the file to import (:class:`feedback.interop.Imported`)."""
    fields = tuple(f.strip() for f in args.completion_fields.split(",") if f.strip())
    if args.tool == "label-studio":
        from feedback.labelstudio import read_label_studio

        return read_label_studio(args.file, args.prompt_field, args.items_field, fields or ("text1", "text2"))
    from feedback.argilla import read_argilla

    return read_argilla(args.file, args.prompt_field, args.question, fields)
