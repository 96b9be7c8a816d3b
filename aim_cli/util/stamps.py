"""Who wrote a record and when, as every stored record says it: a manifest's ``created_at`` and
``created_by``, an alias entry's ``at`` and ``by``, a signed alias statement's times."""

from __future__ import annotations

import getpass
import os
import socket
from datetime import UTC, datetime


def rfc3339(when: datetime) -> str:
    """``when`` as RFC 3339 UTC with microseconds (format/manifest.py's ``CREATED_AT``)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC))


def user_at_host() -> str:
    """``user@host`` of this process."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a container: not worth failing a write for
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
