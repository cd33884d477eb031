"""``rewardserve import``: a reward model rewardserve did not train becomes a bundle, once its spec is proven.

The source is a local directory or a Hugging Face hub name (resolved through the hub's cache; offline with
``HF_HUB_OFFLINE=1``). Its family (:mod:`rewardmodel.families`) derives the scoring spec; then the spec is
*proven* before anything is written: the probe conversations are scored through the spec (rewardserve's
formatter, one padded batch, the card's head) and through the family's reference path (the model's documented
usage, one unpadded input at a time), and the import is refused (:class:`ImportRefused`, naming the first
difference: token ids, then scores) when they differ beyond fp32 noise. The bundle is the source's files,
hard-linked where the filesystem allows and copied otherwise (weights never converted), plus the card; it is
written to a temporary directory beside the output and renamed into place, so a bundle is whole or absent.

``rewardserve serve`` takes the same sources: :func:`ensure_bundle` imports a plain directory or hub name once
into ``$REWARDSERVE_HOME/imported/``, keyed by the source's files and the options, and serves that bundle on
later starts without proving or hashing again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rewardmodel.batching import pad_batch
from rewardmodel.card import CARD_NAME, PICKLE_SUFFIXES, BundleCard, Normalization, VerifiedFiles, write_card
from rewardmodel.errors import BundleError, RewardModelError
from rewardmodel.families import Checkpoint, Derived, Family, ImportOptions, Probe, detect, remote_family
from rewardmodel.formatting import EncodedInput, Formatter, unpadded

log = logging.getLogger(__name__)

ABS_TOLERANCE = 1e-4
REL_TOLERANCE = 1e-4
"""Spec and reference agree when ``|a − b| ≤ 1e-4 + 1e-4·|b|``: fp32 noise between one padded batch and unpadded
single inputs (different kernels and summation orders), far below any real mismatch (a BOS more, a token
early: differences of 1e-2 and up on the test models, whole units on trained ones)."""
MIN_PROBES = 3

PROBES = (
    Probe([{"role": "user", "content": "How do I boil an egg?"}],
          "Place the egg in boiling water for nine minutes, then cool it in cold water."),
    Probe([{"role": "user", "content": "What is 2 + 2?"}], "4"),
    Probe([{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Name a colour."}],
          "Blue."),
    Probe([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
           {"role": "user", "content": "Tell me a joke."}],
          "Why did the chicken cross the road? To get to the other side."),
    Probe([{"role": "user", "content": "Écris une phrase en français, s'il te plaît."}],
          "Voici une phrase : le café est très chaud ☕."),
    Probe([{"role": "user", "content": "Solve 3x + 2 = 14."}],
          "Subtract 2 from both sides: 3x = 12.\n\nDivide both sides by 3: x = 4.\n\nThe answer is 4."),
)
"""Conversations the proof scores both ways: single and multi-turn, a system turn (a template may refuse it:
then both paths must refuse), non-ASCII text, a one-token reply, and steps separated by blank lines."""

WEIGHT_SUFFIXES = (".safetensors",)
SKIPPED = (*PICKLE_SUFFIXES, ".msgpack", ".h5", ".onnx", ".gguf")
"""Files of a source left out of the bundle: other weight formats (rewardserve loads safetensors only) and a
Trainer's pickled arguments."""


DEFAULTS = ImportOptions()


class ImportRefused(BundleError):
    """The spec did not reproduce the family's reference scores: nothing was written."""


HUB_SCHEME = "hf:"
"""Marks a hub name where a bare ``owner/name`` would be a relative path (a models file): ``hf:owner/name`` (or
``hf://owner/name``)."""


def hub_name(src: str) -> str:
    """``src`` without the hub scheme (a path keeps one slash of ``hf://``: ``hf:/owner/name``)."""
    return src[len(HUB_SCHEME):].lstrip("/") if src.startswith(HUB_SCHEME) else src


def resolve_source(src: str) -> Path:
    """A local directory, or a hub name's (``owner/name``, ``hf:owner/name``) snapshot in the Hugging Face cache."""
    src = hub_name(src)
    path = Path(src).expanduser()
    if path.is_dir():
        return path
    if path.exists() or src.count("/") != 1 or src.startswith((".", "/")):
        raise BundleError(f"{src} is not a directory, nor a Hugging Face hub name (owner/name)")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        return Path(snapshot_download(src, allow_patterns=["*.json", "*.safetensors", "*.py", "*.model", "*.txt",
                                                           "*.jinja", "*.tiktoken"]))
    except ImportError as exc:
        raise BundleError(f"{src} is a hub name, and huggingface_hub is not installed: pip install "
                          "'rewardserve[train]', or pass a local directory") from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, ValueError, OSError) as exc:
        raise BundleError(f"{src}: no directory of that name, and the Hugging Face cache has no snapshot of it "
                          f"({type(exc).__name__}). On a machine without the hub, download it first elsewhere "
                          f"(`hf download {src}`) and copy the cache, or pass the model's directory") from exc


def check_files(root: Path) -> dict[str, Any]:
    """``config.json`` read, and safetensors weights present; names what is missing or unusable."""
    config_path = root / "config.json"
    if not config_path.is_file():
        raise BundleError(f"{root} has no config.json: pass the directory of a Hugging Face checkpoint")
    if not any(root.glob("*.safetensors")):
        pickles = sorted(p.name for p in root.iterdir()
                         if p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin")
        if pickles:
            raise BundleError(f"{root} holds only pickle-format weights ({', '.join(pickles)}); rewardserve loads "
                              "safetensors only. Convert them once: load with transformers and "
                              "save_pretrained(DIR, safe_serialization=True)")
        raise BundleError(f"{root} has no *.safetensors weights")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{config_path} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise BundleError(f"{config_path} must hold a JSON object")
    return config


REMOTE_AUTO_CLASSES = ("AutoModelForSequenceClassification", "AutoModelForTokenClassification", "AutoModel")


def open_checkpoint(root: Path, config: dict[str, Any], options: ImportOptions, device: str
                    ) -> tuple[Family, Checkpoint]:
    """The family and the loaded checkpoint (fp32, for the proof)."""
    import torch
    from transformers import AutoTokenizer

    from rewardmodel.head import HeadSpec
    from rewardmodel.torch_model import load_checkpoint as load_model

    family = detect(config)
    auto_map = config.get("auto_map") or {}
    if family is None:
        if not options.trust_remote_code:
            raise BundleError(f"{root} runs its own Python code ({', '.join(sorted(set(auto_map.values())))}); read "
                              "it, then pass --trust-remote-code to import it")
        auto_class = next((a for a in REMOTE_AUTO_CLASSES if a in auto_map), None)
        if auto_class is None:
            raise BundleError(f"{root}'s auto_map names no model class rewardserve loads ({REMOTE_AUTO_CLASSES})")
    else:
        auto_class = family.auto_class
    try:
        tokenizer = AutoTokenizer.from_pretrained(root, trust_remote_code=options.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{root}: its tokenizer does not load ({exc})") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise BundleError(f"{root}'s tokenizer has no fast (Rust) form; rewardserve's formatter needs tokenizer.json")
    head = HeadSpec(auto_class=auto_class, trust_remote_code=family is None)
    try:
        model = load_model(root, head, device, torch.float32, options.trust_remote_code).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise BundleError(f"{root} does not load as {auto_class}: {exc}") from exc
    if family is None:
        family = remote_family(model, config)
        family.auto_class = auto_class
    return family, Checkpoint(root, config, tokenizer, model)


def backend_tokenizer(ckpt: Checkpoint) -> Any:
    """A copy of the checkpoint's Rust tokenizer, as the bundle's tokenizer.json will load."""
    from tokenizers import Tokenizer

    return unpadded(Tokenizer.from_str(ckpt.tokenizer.backend_tokenizer.to_str()))


def _first_difference(ours: Sequence[int], theirs: Sequence[int]) -> str:
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))
    window = slice(max(0, at - 2), at + 4)
    return (f"token ids differ at position {at}: the reference feeds {len(theirs)} ids "
            f"{list(theirs[window])}… there, the spec {len(ours)} ids {list(ours[window])}…")


def prove(family: Family, ckpt: Checkpoint, derived: Derived, probes: Sequence[Probe] = PROBES) -> dict[str, Any]:
    """Score ``probes`` through the spec (one padded batch) and the reference path; refuse what differs."""
    import torch

    from rewardmodel.torch_heads import ScoringModule

    formatter = Formatter(backend_tokenizer(ckpt), derived.formatting)
    problems: list[str] = []
    used: list[tuple[int, EncodedInput, np.ndarray]] = []
    skipped: list[str] = []
    for i, probe in enumerate(probes):
        ours: EncodedInput | Exception
        theirs: tuple[list[int], np.ndarray] | Exception
        try:
            theirs = family.reference(ckpt, derived, probe)
        except Exception as exc:  # the model's own code and template raise what they raise
            theirs = exc
        try:
            ours = formatter.encode(probe.messages if derived.chat else probe.question, probe.completion)
        except RewardModelError as exc:
            ours = exc
        if isinstance(theirs, Exception) and isinstance(ours, Exception):
            skipped.append(f"probe {i}: both refuse it ({theirs})")
        elif isinstance(theirs, Exception):
            problems.append(f"probe {i}: the reference path fails on it ({theirs}) where the spec scores it")
        elif isinstance(ours, Exception):
            problems.append(f"probe {i}: the spec refuses it ({ours}) where the reference path scores it")
        elif list(ours.input_ids) != list(theirs[0]):
            problems.append(f"probe {i}: {_first_difference(ours.input_ids, theirs[0])}")
        else:
            used.append((i, ours, np.asarray(theirs[1], dtype=np.float64)))
    figures: dict[str, Any] = {"probes": len(used), "skipped": skipped}
    if used:
        batch = pad_batch([e for _, e, _ in used], derived.formatting)
        module = ScoringModule(ckpt.model, derived.head).eval()
        device = next(ckpt.model.parameters()).device
        with torch.inference_mode():
            got = module(**{k: torch.from_numpy(v).to(device) for k, v in batch.as_dict().items()}).float()
        got_rows = got.cpu().numpy().astype(np.float64)
        worst = 0.0
        for row, (i, _, want) in zip(got_rows, used, strict=True):
            if row.shape != want.shape:
                problems.append(f"probe {i}: the spec gives {row.shape[0]} outputs, the reference {want.shape[0]}")
                continue
            diff = np.abs(row - want)
            worst = max(worst, float(diff.max()))
            if (diff > ABS_TOLERANCE + REL_TOLERANCE * np.abs(want)).any():
                problems.append(f"probe {i}: scores differ by {diff.max():.3g} with the same token ids (reference "
                                f"{np.round(want[:4], 5).tolist()}, spec {np.round(row[:4], 5).tolist()})")
        figures["max_abs_diff"] = worst
    figures["tolerance"] = {"abs": ABS_TOLERANCE, "rel": REL_TOLERANCE}
    if not problems and len(used) < MIN_PROBES:
        problems.append(f"only {len(used)} probe(s) could be scored both ways ({'; '.join(skipped)})")
    if problems:
        raise ImportRefused(f"{ckpt.root} ({derived.family}): the scoring spec does not reproduce the family's "
                            f"reference path, so it is not imported: {'; '.join(problems[:3])}"
                            + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""))
    return figures


def reference_normalization(ckpt: Checkpoint, derived: Derived, data: str) -> Normalization:
    """Mean and std of the rewards of every completion of ``data`` (preference data), through the spec."""
    from rewardmodel.head import OutputLayout
    from rewardmodel.scoring import score_examples
    from rewardmodel.sources import load_examples
    from rewardmodel.torch_heads import ScoringModule
    from rewardmodel.torch_model import torch_scorer

    examples = load_examples(data)
    layout = OutputLayout.of(derived.head, derived.formatting, derived.criteria)
    scores, _, _ = score_examples(torch_scorer(ScoringModule(ckpt.model, derived.head).eval()),
                                  Formatter(backend_tokenizer(ckpt), derived.formatting), examples, layout=layout)
    flat = np.asarray([s for per in scores for s in per])
    return Normalization(float(flat.mean()), max(float(flat.std()), 1e-6), reference=data, count=len(flat))


def _place(source: Path, target: Path) -> None:
    """Hard-link ``source`` (its real file, through the hub cache's symlinks) at ``target``, else copy it."""
    real = source.resolve()
    try:
        os.link(real, target)
    except OSError:
        shutil.copy2(real, target)


def write_bundle(ckpt: Checkpoint, card: BundleCard, output: Path, verified: VerifiedFiles | None) -> BundleCard:
    """The source's files plus the card, in a temporary directory renamed to ``output`` once whole."""
    if output.exists():
        raise BundleError(f"{output} exists; remove it or choose another --output-dir")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.importing-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        for path in sorted(ckpt.root.iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.suffix not in SKIPPED \
                    and path.name not in (CARD_NAME, "tokenizer.json"):
                _place(path, staging / path.name)
        # the tokenizer the proof ran: transformers' tokenizer class may rebuild the source's tokenizer.json (Qwen2's
        # does, with its own pre-tokenizer), or make one from a slow tokenizer; the formatter must see what it did
        ckpt.tokenizer.backend_tokenizer.save(str(staging / "tokenizer.json"))
        card = write_card(staging, card)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if verified is not None:  # the hashes just computed, remembered under the final path
        verified.remember(output, card.files)
    return card


def import_model(src: str, output: str | Path, options: ImportOptions = DEFAULTS,
                 reference_data: str | None = None, device: str = "cpu", verified: VerifiedFiles | None = None,
                 name: str = "", log_step: Callable[[str], None] = log.info) -> BundleCard:
    """Import ``src`` into a bundle at ``output`` (see the module docstring); raises :class:`ImportRefused` when
    the spec is not proven, :class:`BundleError` for a source that cannot be imported."""
    import torch
    import transformers

    root = resolve_source(src)
    config = check_files(root)
    log_step(f"loading {root}")
    family, ckpt = open_checkpoint(root, config, options, device)
    derived = family.derive(ckpt, options)
    log_step(f"{derived.family}: proving the scoring spec on {len(PROBES)} probes")
    proof = prove(family, ckpt, derived)
    normalization = None
    if derived.normalization is not None:
        normalization = Normalization(*derived.normalization, reference=f"{src} config.json (mean, std)")
    if reference_data:
        log_step(f"scoring {reference_data} for the normalization")
        normalization = reference_normalization(ckpt, derived, reference_data)
    card = BundleCard(
        name=name or Path(output).name, base_model=src,
        architecture="encoder" if derived.formatting.template == "pair" else "decoder",
        model_type=str(config.get("model_type", "")), formatting=derived.formatting, normalization=normalization,
        criteria=derived.criteria, head=derived.head,
        source={"family": derived.family, "source": src, "resolved": str(root), "notes": derived.notes,
                "proof": proof, "options": asdict(options),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__}},
    )
    written = write_bundle(ckpt, card, Path(output), verified)
    del ckpt, family
    _release(device)
    return written


def _release(device: str) -> None:
    """Free the proof's fp32 model now, before the caller loads its own copy: its scoring module's hooks hold it in
    a reference cycle, and on a GPU the allocator would keep its memory (an 8B model's 32 GB) reserved."""
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def source_key(root: Path, options: ImportOptions) -> str:
    """A key of a source's files (names, sizes, mtimes) and the import options: a changed source imports anew."""
    parts = [str(root.resolve()), json.dumps(asdict(options), sort_keys=True)]
    for path in sorted(root.iterdir()):
        if path.is_file():
            st = path.stat()
            parts.append(f"{path.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def ensure_bundle(src: str | Path, home: Path, options: ImportOptions = DEFAULTS,
                  verified: VerifiedFiles | None = None, device: str = "cpu") -> Path:
    """``src`` itself when it is a bundle; else its import under ``home/imported`` (imported now if absent, the
    proof running on ``device``)."""
    src = hub_name(str(src))
    path = Path(src).expanduser()
    if (path / CARD_NAME).is_file():
        return path
    root = resolve_source(src)
    if (root / CARD_NAME).is_file():
        return root
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in src.strip("/").replace("/", "--"))[-60:]
    target = home / "imported" / f"{slug}-{source_key(root, options)}"
    if not (target / CARD_NAME).is_file():
        log.info("importing %s into %s (once: later starts serve the import)", src, target)
        try:
            import_model(src, target, options, device=device, verified=verified, name=Path(src).name or slug)
        except BundleError:
            if not (target / CARD_NAME).is_file():  # not a process beside this one that imported it first
                raise
    return target

