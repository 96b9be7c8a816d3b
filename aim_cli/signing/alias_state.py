"""The sequence numbers of signed aliases a consumer has accepted (docs/design.md §12): kept per
(repository, model, alias, key) in two files, the per-user state file and DEST's own, so that a
statement older than one already seen is refused (a rollback) wherever the consumer pulls.

    $AIM_STATE_DIR/alias-sequence.json     (else $XDG_STATE_HOME/aim_cli/, else ~/.local/state/aim_cli/)
    DEST/.aim/alias-sequence.json

    {"format": 1, "seen": [{"repository": "local:/srv/models", "model": "m", "alias": "prod",
                            "signer": "<64 hex key hint>", "index": 7}, ...]}

A file is written whole through a temp file and a rename (util.fs.write_beside_at), under an
exclusive ``flock`` of its directory, merging what is on disk (the higher number wins), so two
pulls at once never lower a number. Both files may have been altered by whoever can write them:
they are read bounded and strictly, and a damaged one is an error (exit 5) saying how to start
over, never silently reset (a reset would re-open the rollback it guards against).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

import msgspec

from aim_cli.errors import IntegrityError, StorageError
from aim_cli.format.alias import MAX_INDEX
from aim_cli.names import valid_model_name, valid_name
from aim_cli.util.fs import display_path, read_at_most, write_beside_at
from aim_cli.util.quoting import printable

STATE_DIR_ENV = "AIM_STATE_DIR"
STATE_NAME = "alias-sequence.json"
FORMAT = 1
#: Entries a state file may hold: one per (repository, model, alias, key) ever pulled signed.
MAX_ENTRIES = 10_000
MAX_REPOSITORY_CHARS = 4096
#: 10,000 entries of at most ~4.6 KiB each, with room.
MAX_STATE_BYTES = 64 * 1024 * 1024
_HEX64 = frozenset("0123456789abcdef")

#: (repository identity, model, alias, the key's 64-hex hint)
SeenKey = tuple[str, str, str, str]


class Seen(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    repository: str
    model: str
    alias: str
    signer: str
    index: int


class StateDoc(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    format: int
    seen: list[Seen]


_decoder = msgspec.json.Decoder(StateDoc)


def user_state_dir() -> Path:
    """Where the per-user state file lives: $AIM_STATE_DIR, else $XDG_STATE_HOME/aim_cli (an
    absolute path, as the XDG spec asks), else ~/.local/state/aim_cli."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "aim_cli"


def _problem(seen: Seen) -> str | None:
    if not seen.repository or len(seen.repository) > MAX_REPOSITORY_CHARS:
        return "a repository identity is empty or too long"
    if not (valid_model_name(seen.model) and valid_name(seen.alias)):
        return "a model or alias name is invalid"
    if len(seen.signer) != 64 or not _HEX64.issuperset(seen.signer):
        return "a signer is not 64 hex characters"
    if not 1 <= seen.index <= MAX_INDEX:
        return f"index {seen.index} is out of range"
    return None


class SequenceState:
    """One state file: ``directory``/alias-sequence.json. ``what`` names it in messages;
    ``nofollow``: the directory itself is opened without following a symlink (DEST/.aim)."""

    def __init__(self, directory: Path, what: str, *, nofollow: bool = False):
        self.directory = directory
        self.path = directory / STATE_NAME
        self.what = what
        self.nofollow = nofollow

    def damaged(self, why: str) -> IntegrityError:
        shown = display_path(self.path)
        return IntegrityError(
            f"{self.what} {shown} is damaged: {why}",
            f"it records the signed alias sequence numbers already accepted; if you trust that no alias was "
            f"rolled back, move it aside (`mv {shown} {shown}.bad`) and pull again",
        )

    # -- reading ---------------------------------------------------------------------------------
    def load(self) -> dict[SeenKey, int]:
        """What the file records; {} when it (or its directory) does not exist."""
        try:
            dir_fd = self._open_dir()
        except FileNotFoundError:
            return {}
        try:
            return self._load_at(dir_fd)
        finally:
            os.close(dir_fd)

    def _open_dir(self) -> int:
        flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0) | (os.O_NOFOLLOW if self.nofollow else 0)
        try:
            return os.open(self.directory, flags)
        except FileNotFoundError:
            raise
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self.damaged("its directory is a symlink or not a directory") from None
            raise StorageError(
                f"cannot open {display_path(self.directory)}: {e.strerror}", "check its permissions"
            ) from None

    def _load_at(self, dir_fd: int) -> dict[SeenKey, int]:
        try:
            fd = os.open(STATE_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            return {}
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise self.damaged("it is a symlink") from None
            raise StorageError(
                f"cannot read {display_path(self.path)}: {e.strerror}", "check its permissions"
            ) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise self.damaged("it is not a regular file")
            data = read_at_most(fd, MAX_STATE_BYTES)
        finally:
            os.close(fd)
        if len(data) > MAX_STATE_BYTES:
            raise self.damaged(f"it is larger than {MAX_STATE_BYTES} bytes")
        return self.parse(data)

    def parse(self, data: bytes) -> dict[SeenKey, int]:
        try:
            doc = _decoder.decode(data)
        except (msgspec.MsgspecError, UnicodeDecodeError) as e:
            raise self.damaged(f"it cannot be parsed: {printable(str(e))}") from None
        if doc.format != FORMAT:
            raise self.damaged(f"unknown format {doc.format}")
        if len(doc.seen) > MAX_ENTRIES:
            raise self.damaged(f"more than {MAX_ENTRIES} entries")
        found: dict[SeenKey, int] = {}
        for seen in doc.seen:
            why = _problem(seen)
            key = (seen.repository, seen.model, seen.alias, seen.signer)
            if why is None and key in found:
                why = "an alias appears twice"
            if why:
                raise self.damaged(why)
            found[key] = seen.index
        return found

    # -- writing ---------------------------------------------------------------------------------
    def record(self, updates: Mapping[SeenKey, int], *, create: bool = True) -> None:
        """Raise the numbers of ``updates`` in the file (never lower one), under the directory's
        lock. ``create``: make the directory (0700) if it is missing (DEST/.aim: DEST must exist)."""
        if create:
            try:
                self.directory.mkdir(mode=0o700, parents=not self.nofollow, exist_ok=True)
            except OSError as e:
                raise StorageError(
                    f"cannot create {display_path(self.directory)}: {e.strerror}",
                    f"set {STATE_DIR_ENV} to a writable directory",
                ) from None
        dir_fd = self._open_dir()
        try:
            with _locked(dir_fd):
                merged = self._load_at(dir_fd)
                for key, index in updates.items():
                    merged[key] = max(index, merged.get(key, 0))
                if len(merged) > MAX_ENTRIES:
                    raise self.damaged(f"it would hold more than {MAX_ENTRIES} entries")
                write_beside_at(dir_fd, STATE_NAME, _encode(merged), mode=0o600)
        except StorageError:
            raise
        except OSError as e:
            raise StorageError(
                f"cannot write {display_path(self.path)}: {e.strerror}", "check its permissions"
            ) from None
        finally:
            os.close(dir_fd)


def _encode(found: Mapping[SeenKey, int]) -> bytes:
    seen = [Seen(r, m, a, s, i) for (r, m, a, s), i in sorted(found.items())]
    return msgspec.json.encode(StateDoc(FORMAT, seen)) + b"\n"


@contextlib.contextmanager
def _locked(dir_fd: int) -> Iterator[None]:
    """An exclusive flock of the directory: one writer of its state file at a time."""
    import fcntl

    fcntl.flock(dir_fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(dir_fd, fcntl.LOCK_UN)
