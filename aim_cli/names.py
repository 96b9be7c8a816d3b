"""The name grammar: what a repository, model, tag or signer hint may be called.

A name becomes one segment of a storage key and one word of a printed command, so it is kept to
1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit (``NAME_RE``).
"""

from __future__ import annotations

import re

from aim_cli.errors import UsageError
from aim_cli.util.quoting import quoted

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(kind: str, name: str) -> str:
    """Validate a repository, model or tag name (docs/design.md §2)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid {kind} name {quoted(name) if isinstance(name, str) else repr(name)}",
            "use 1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit",
        )
    return name


def valid_name(name: str) -> bool:
    """Whether ``check_name`` accepts ``name``."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None
