"""Sizes typed on the command line: ``512KiB``, ``1.5GiB``, ``1048576``; and sizes written out
(``human_size``), in the same IEC units everywhere: results, bars, rates.

A strict grammar instead of ``float()``: float accepted ``1e400`` (then overflowed), ``inf``,
``nan`` and ``-5``. Here a size is plain decimal digits with an optional fraction and a binary
unit, computed exactly in integers and bounded, so every input gives an int or a UsageError.
"""

from __future__ import annotations

import re

from aim_cli.errors import UsageError
from aim_cli.util.quoting import quoted

MAX_SIZE = 2**63 - 1  # what a signed 64-bit size field (os, S3, a manifest) can hold
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
# ASCII digits only (\d would take Arabic-Indic digits); at most 30 of them, so the arithmetic
# below is bounded whatever the input's length. "KiB", "KB", "K" and "k" are all 1024.
_SIZE_RE = re.compile(r"\s*([0-9]{1,30}(?:\.[0-9]{1,30})?)\s*(?:([kmgtp])i?)?b?\s*", re.IGNORECASE | re.ASCII)
_EXAMPLES = "write it like 512KiB, 1.5GiB or 1048576 (a whole number of bytes, or a number with a unit)"


def parse_size(text: str, *, option: str, minimum: int = 0) -> int:
    """``text`` as a number of bytes in [minimum, MAX_SIZE]; UsageError (exit 2) otherwise.
    ``option`` names the option in the message (``--max-size``)."""
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        raise UsageError(f"invalid size {quoted(text)} for {option}", _EXAMPLES)
    whole, _, fraction = m.group(1).partition(".")
    unit = _UNITS[(m.group(2) or "").lower()]
    # Exact integer arithmetic (1.5GiB is 1610612736, not a float's guess); a fraction of a byte
    # is dropped.
    size = int(whole) * unit + int(fraction or "0") * unit // 10 ** len(fraction)
    if size > MAX_SIZE:
        raise UsageError(f"{option} {quoted(text)} is too large", "use a size below 8EiB (2**63 bytes)")
    if size < minimum:
        raise UsageError(f"{option} {quoted(text)} is too small", f"use at least {minimum} bytes")
    return size


def human_size(n: int) -> str:
    """``n`` bytes in IEC units, as every output writes a size: "1 Byte", "512 Bytes", "1.5 MiB"."""
    import humanize

    return humanize.naturalsize(n, binary=True)
