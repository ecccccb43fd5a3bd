"""Names from the YAML files that become parts of paths (the job's name, each algorithm's name:
``{workspace}/{job}/{algorithm}/{case id}``) must each be one harmless path component.

A name like ``../../etc``, ``/tmp/x`` or ``a/b`` would otherwise write outside the workspace or into another job's
folder. Such names are refused with a message, not rewritten: the rank files' ``url`` column is built from the
same names under Ianvs, so a silently changed name would point somewhere else there.
"""

from __future__ import annotations

import re

from cepr.errors import CeprError

MAX_NAME_CHARS = 128
_BAD_CHARS = re.compile(r"[/\\\x00-\x1f\x7f:*?\"<>|]")  # separators, controls, and what Windows refuses
_WINDOWS_RESERVED = re.compile(r"(?i)(con|prn|aux|nul|com\d|lpt\d)(\..*)?")


def path_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be used as one path component, or None when it can."""
    if not isinstance(name, str) or not name.strip():
        return "it is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"it is longer than {MAX_NAME_CHARS} characters"
    if name in (".", "..") or name.strip(". ") == "":
        return "it names the current or the parent directory"
    bad = _BAD_CHARS.search(name)
    if bad:
        return f"it contains {bad.group()!r} (no path separators, control characters or any of :*?\"<>|)"
    if name != name.strip() or name.endswith("."):
        return "it starts or ends with a space, or ends with a dot"
    if name.startswith("-"):
        return "it starts with '-' (it would read as an option to command-line tools)"
    if _WINDOWS_RESERVED.fullmatch(name):
        return "it is a reserved device name on Windows"
    return None


def check_path_name(name: str, what: str, where: object = "") -> str:
    """``name`` if it is a safe single path component, else a CeprError naming ``what`` (and the file, ``where``)."""
    problem = path_name_problem(name)
    if problem:
        prefix = f"{where}: " if where else ""
        raise CeprError(f"{prefix}{what} {name!r} becomes a folder name in the workspace, but {problem}; use "
                        "letters, digits, '-', '_', '.' or spaces")
    return name
