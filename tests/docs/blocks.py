"""The fenced code blocks of the README and the docs pages, as the tests read them."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCS_URL = "http://localhost:8000"
"""Where the examples expect the server; the tests put a live one there instead."""

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    """One fenced block: its page, language and text."""

    page: Path
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}: {self.text.strip().splitlines()[0][:80]}"

    def commands(self) -> list[str]:
        """A shell block's commands: continuations joined, comments and blank lines dropped, ``&&`` split."""
        out = []
        for line in self.text.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out += [c.strip() for c in line.split("&&")]
        return out


def blocks(language: str | None = None) -> list[Block]:
    """Every fenced block of every page (of ``language`` only, when given)."""
    found = []
    for page in PAGES:
        for m in _FENCE.finditer(page.read_text(encoding="utf-8")):
            if language is None or m.group(1) == language:
                found.append(Block(page, m.group(1), m.group(2)))
    return found


def exported_settings(page: Path) -> dict[str, str]:
    """The ``export REWARDSERVE_*=…`` lines of a page's shell blocks: the settings its examples run under."""
    settings = {}
    for block in blocks("bash"):
        if block.page != page:
            continue
        for command in block.commands():
            words = shlex.split(command)
            if words and words[0] == "export":
                for word in words[1:]:
                    name, _, value = word.partition("=")
                    if name.startswith("REWARDSERVE_"):
                        settings[name.removeprefix("REWARDSERVE_").lower()] = value
    return settings
