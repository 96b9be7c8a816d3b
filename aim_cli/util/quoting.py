"""Showing a value that came from outside (a config file, a manifest, a file name, the command
line) inside a message.

A message is one short printable line whatever the input holds: a 1 MiB key, a path made of
lone surrogates (a non-UTF-8 file name), a newline that would forge a second output line.
"""

from __future__ import annotations

import re

MAX_SHOWN = 160  # characters of a value kept in a message: a whole valid name (128) fits


def quoted(value: str, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` of at most ``limit`` characters of ``value`` (then ``...``).

    ``repr`` escapes control characters and lone surrogates, so the result prints on any
    terminal and encodes as UTF-8. The value is cut before ``repr`` runs: the cost is bounded
    too."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}..."


def printable(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` for a message, unquoted (a library's error text may echo hostile input): cut to
    ``limit`` characters, with control characters, backslashes and lone surrogates escaped."""
    shown = repr(text[:limit])[1:-1]
    return shown + "..." if len(text) > limit else shown


# C0 controls, DEL and C1 controls: a newline or carriage return forges an output line, an
# escape (or the 8-bit CSI, U+009B) drives the terminal. No file name or setting needs one.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def has_control(text: str) -> bool:
    return _CONTROL_RE.search(text) is not None
