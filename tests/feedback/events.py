"""Feedback events for tests: one of each form, with distinct ids."""

from __future__ import annotations

from typing import Any


def choice(i: int, **extra: Any) -> dict[str, Any]:
    """A choice between three completions of prompt ``i``."""
    return {"id": f"choice-{i}", "prompt": f"question {i}", "completions": [f"good {i}", f"bad {i}", f"meh {i}"],
            "choice": 0, **extra}


def ranking(i: int, **extra: Any) -> dict[str, Any]:
    """A ranking with a tie group, over chat messages."""
    return {"id": f"ranking-{i}", "prompt": [{"role": "user", "content": f"question {i}"}],
            "completions": [f"good {i}", f"bad {i}", f"meh {i}"], "ranking": [0, [1, 2]], **extra}


def ratings(i: int, **extra: Any) -> dict[str, Any]:
    """Ratings on a 1-5 scale, one completion unrated, with per-criterion ratings."""
    return {"id": f"ratings-{i}", "prompt": f"question {i}", "completions": [f"good {i}", f"bad {i}", f"meh {i}"],
            "ratings": [5, 1, None], "scale": [1, 5], "criteria": {"helpful": [5, 2, None]}, **extra}


def thumbs(i: int, **extra: Any) -> dict[str, Any]:
    """A thumbs-down on one completion."""
    return {"id": f"thumbs-{i}", "prompt": f"question {i}", "completions": [f"bad {i}"], "ratings": [-1], **extra}


def implicit(form: str, i: int, **extra: Any) -> dict[str, Any]:
    """An implicit signal from a chat UI, on two replies where the user regenerated the first into the second:
    ``regenerate`` names the first; ``edit`` says the second is the user's edit of the first; the others name
    the second."""
    value: Any = {"original": 0, "edited": 1} if form == "edit" else 0 if form == "regenerate" else 1
    return {"id": f"{form}-{i}", "prompt": f"question {i}", "completions": [f"first {i}", f"second {i}"],
            form: value, **extra}
