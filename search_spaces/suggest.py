"""Error messages for a mistyped name: "did you mean ...?" from the known names (``difflib``).

Used wherever a user names something the framework registers: architectures
(:func:`search_spaces.resolve_arch`, :func:`search_spaces.references.get`), search spaces
(:func:`search_spaces.spaces.get_space`), searchers and the command line's choices.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` known names that look like ``name`` (case-insensitive), best first."""
    known = list(known)
    by_lower = {k.lower(): k for k in known}
    return [by_lower[m] for m in difflib.get_close_matches(str(name).lower(), list(by_lower), n=n, cutoff=0.6)]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` (or ``'x' or 'y'``) when something known looks like ``name``, else ``""``."""
    matches = close_matches(name, known)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"


def unknown_name(what: str, name: str, known: Iterable[str]) -> str:
    """``unknown WHAT 'name' (did you mean ...?); known: a, b, c`` — the one wording of these errors."""
    known = list(known)
    return f"unknown {what} {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}"
