"""Files the user names on the command line (keys, certificates, bundles): read bounded, and
an exported bundle written whole or not at all."""

from __future__ import annotations

import os

from aim_cli.errors import UsageError

MAX_KEY_FILE_BYTES = 1024 * 1024


def read_user_file(path: str | os.PathLike, what: str, max_size: int = MAX_KEY_FILE_BYTES) -> bytes:
    """A key, certificate or bundle file named on the command line, read bounded."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_size + 1)
    except OSError as e:
        raise UsageError(f"cannot read {what} {os.fspath(path)!r}: {e.strerror or e}", "check the path") from None
    if len(data) > max_size:
        raise UsageError(f"{what} {os.fspath(path)!r} is larger than {max_size} bytes", f"pass a {what}")
    return data


def write_new_file(path: str | os.PathLike, data: bytes) -> None:
    """Write ``path`` through a temporary file and a rename: never half-written under its name."""
    path = os.fspath(path)
    tmp = f"{path}.aim-tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
