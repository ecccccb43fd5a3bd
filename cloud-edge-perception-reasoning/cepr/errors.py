"""Exception types with messages meant for the person at the terminal, and the one "did you mean" helper."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CeprError(Exception):
    """Base class: the CLI prints these as one clear line and exits non-zero, no traceback."""


class DatasetError(CeprError):
    """A dataset file or index is missing, corrupt or inconsistent; the message names the file."""


def closest(name, choices: Iterable) -> str | None:
    """The choice ``name`` most likely meant: the same name in another case ("oracle" -> "Oracle"), else the
    closest by difflib's ratio (at least 0.6), first on the names as written, then ignoring case. None if none
    is close."""
    choices = [str(c) for c in choices]
    name = str(name)
    folded = {c.casefold(): c for c in reversed(choices)}  # the first spelling wins on a tie
    if name.casefold() in folded:
        return folded[name.casefold()]
    hint = difflib.get_close_matches(name, choices, n=1)
    if hint:
        return hint[0]
    hint = difflib.get_close_matches(name.casefold(), list(folded), n=1)
    return folded[hint[0]] if hint else None


def did_you_mean(name, choices: Iterable, what: str = "") -> str:
    """``"; did you mean 'x'?"`` (``what`` goes before the name: "the shipped model"), or "" when nothing is close."""
    hint = closest(name, choices)
    if hint is None:
        return ""
    return f"; did you mean {what + ' ' if what else ''}{hint!r}?"


def unknown(what: str, name, choices: Iterable, listing: str | None = None, sort: bool = False) -> str:
    """The message for a name that is not one of ``choices``: ``unknown {what} 'x'; did you mean 'y'? ({listing}:
    a, b)``. The list is left out when ``listing`` is None; ``sort`` sorts it."""
    choices = [str(c) for c in choices]
    msg = f"unknown {what} {name!r}" + did_you_mean(name, choices)
    if listing is not None:
        shown = sorted(choices) if sort else choices
        msg += f" ({listing}: {', '.join(shown) or 'none'})"
    return msg
