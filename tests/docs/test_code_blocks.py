"""Every code block of the README and the docs runs, or is checked as far as this machine allows.

- ``python`` blocks are whole programs: each runs against a live server put where the docs expect it.
- ``bash`` blocks: each ``curl`` runs against a live server started with the settings its page exports (so the
  labeling page's curl carries the feedback key that page sets) and must get a 2xx; each ``rewardserve`` command
  (also under ``python3 -m``, ``torchrun`` and ``accelerate launch``) must parse with the CLI's own parser; a
  benchmark or example script must exist and take every flag the command gives; scripts, overlays and Docker
  targets named must exist; anything else must be a tool the docs are known to use.
- ``json`` and ``yaml`` blocks must parse.

What cannot run here (a GPU training launch, a Docker build, a cluster) is checked for what it names.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rewardserve.cli import build_parser
from tests.docs.blocks import DOCS_URL, ROOT, Block, blocks, exported_settings
from tests.server import running

KNOWN_TOOLS = {"bash", "pip", "mkdocs", "docker", "kubectl", "export", "pre-commit"}
PYTHON_TOOLS = {"pip", "pytest", "ruff", "mypy"}
SERVER_SETTINGS = ("api_keys", "feedback_keys", "annotator_keys", "admin_keys")
"""What a page may export that changes how the test server answers (a model path is the test's own)."""


def _id(block: Block) -> str:
    return block.where


@pytest.fixture(scope="module")
def servers(bert_onnx_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Path, str]]:
    """A live server per distinct page settings (each with a feedback store), by page: its URL."""
    pages = sorted({b.page for b in blocks()})
    configs = {p: tuple(sorted((k, v) for k, v in exported_settings(p).items() if k in SERVER_SETTINGS))
               for p in pages}
    urls: dict[Path, str] = {}
    stacks = []
    try:
        for config in sorted(set(configs.values())):
            db = tmp_path_factory.mktemp("docs-feedback") / "feedback.db"
            settings: dict[str, Any] = dict(config)
            live = running(model=bert_onnx_bundle, feedback_db=str(db), **settings)
            stacks.append(live)
            url = live.__enter__().url
            urls.update({p: url for p, c in configs.items() if c == config})
        yield urls
    finally:
        for live in reversed(stacks):
            live.__exit__(None, None, None)


@pytest.mark.parametrize("block", blocks("python"), ids=_id)
def test_python_blocks_run(block: Block, servers: dict[Path, str], tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(block.text.replace(DOCS_URL, servers[block.page]), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("block", blocks("bash"), ids=_id)
def test_shell_blocks_run_or_parse(block: Block, servers: dict[Path, str]) -> None:
    for command in block.commands():
        words = shlex.split(command.split("|")[0])
        if words[0] == "curl":
            _curl(command, servers[block.page])
        elif words[0] == "rewardserve":
            _parses(words[1:], command)
        elif words[:3] == ["python3", "-m", "rewardserve"] or words[0] in ("torchrun", "accelerate"):
            assert "rewardserve" in words, command
            _parses(words[words.index("rewardserve") + 1:], command)
        elif words[0] == "python3" and words[1] != "-m":
            _script_takes(words[1], words[2:], command)
        else:
            assert words[0] in KNOWN_TOOLS or (words[:2] == ["python3", "-m"] and words[2] in PYTHON_TOOLS), \
                f"an unknown command in the docs: {command}"
            _names_exist(words, command)


@pytest.mark.parametrize("block", blocks("json") + blocks("yaml"), ids=_id)
def test_data_blocks_parse(block: Block) -> None:
    if block.language == "json":
        json.loads(block.text)
    else:
        yaml.safe_load(block.text)


def test_every_page_has_blocks_the_tests_read() -> None:
    """The fences the tests select on are the ones the docs use: a typo'd language would escape every check."""
    languages = {b.language for b in blocks()}
    assert languages <= {"bash", "python", "json", "yaml", "text"}, languages
    assert len(blocks("bash")) > 20 and blocks("python")


def _curl(command: str, url: str) -> None:
    """Run a curl as written, against ``url``; it must get a 2xx."""
    done = subprocess.run(command.replace(DOCS_URL, url) + " -w '\\n%{http_code}'", shell=True,
                          capture_output=True, text=True, timeout=60)
    body, _, status = done.stdout.rpartition("\n")
    assert done.returncode == 0 and status.startswith("2"), f"{command}\n→ {status}: {body[:500]}"


def _parses(argv: list[str], command: str) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"the CLI refuses a documented command ({exc}): {command}")


def _script_takes(path: str, argv: list[str], command: str) -> None:
    """A documented script exists and takes every flag the command gives it."""
    script = ROOT / path
    assert script.is_file(), f"no such script: {command}"
    source = script.read_text(encoding="utf-8")
    for flag in (a.split("=")[0] for a in argv if a.startswith("--")):
        assert re.search(rf"[\"']{re.escape(flag)}[\"']", source), f"{path} takes no {flag}: {command}"


def _names_exist(words: list[str], command: str) -> None:
    """The repository paths a command names (a script, an overlay, a Docker target) exist."""
    if words[0] == "bash":
        assert (ROOT / words[1]).is_file(), command
    if words[:2] == ["kubectl", "kustomize"]:
        assert (ROOT / words[2] / "kustomization.yaml").is_file(), command
    if words[0] == "docker" and "--target" in words:
        target = words[words.index("--target") + 1]
        assert re.search(rf"(?im)^FROM .* AS {target}$", (ROOT / "Dockerfile").read_text()), command
