"""Files the user names on the command line (keys, certificates, bundles): read bounded, and
an exported bundle written whole or not at all."""

from __future__ import annotations

import os

from aim_cli.errors import UsageError
from aim_cli.util.fs import display_path, write_beside

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


def write_new_file(path: str | os.PathLike, data: bytes, what: str = "--output") -> None:
    """Write ``path`` (the ``what`` argument) whole or not at all, through util.fs.write_beside
    (a random O_EXCL|O_NOFOLLOW temp name, fsync, rename). The empty string and a directory are
    refused (UsageError, naming ``what``), as is a path that cannot be written."""
    text = os.fspath(path)
    if text in ("", b""):
        raise UsageError(f"{what} is the empty string", f"pass {what} FILE")
    shown = display_path(text)
    if os.path.isdir(text):
        raise UsageError(f"{what} {shown} is a directory", f"pass {what} a file name, for instance {shown}/bundle.sig")
    try:
        write_beside(text, data)
    except OSError as e:
        raise UsageError(
            f"cannot write {what} {shown}: {e.strerror or e}", "check the path and its directory"
        ) from None
