"""DEST's index, ``DEST/.aim/index.json``: the files pull last wrote or verified in DEST, so that a
later pull does not read them again (docs/design.md §6; git's index, restic's ``--overwrite
if-changed``).

An entry says: the regular file at ``path`` that ``lstat`` shows with exactly this size,
mtime_ns, ctime_ns, inode and device holds bytes whose BLAKE3 is ``blake3``, cut into ``chunks``
(digest, size) in order. The planner trusts an entry only when all of these hold:

- the index file is a regular file (never read through a symlink), owned by this user and
  writable by no one else, at most MAX_INDEX_BYTES, and parses strictly (exact fields, types,
  ranges, chunk sizes adding up to the size, no path twice); anything else is ignored whole,
  with a warning, and the files are read as if there were no index;
- the file's ``lstat`` equals the entry in all five fields (a symlink or any other type never
  matches): any write, truncation, rename over it, chmod or touch changes one of them;
- the entry's mtime is older than the index file's own (git's racy timestamps: a write in the
  same clock tick as the index may leave mtime unchanged, so such an entry is read again).

Trusted, a file whose digest is the manifest's is complete without a read, and the chunks of an
earlier file are copied into the new one without a read (``os.copy_file_range``). What is copied
unread is covered by the whole-file digest each file is checked against before its rename, so a
lying index can cost a second assembly of a file, never a wrong file under a final name.
``pull --verify-existing`` ignores the index; ``verify --local`` never reads it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec

from aim_cli.format import manifest as mf
from aim_cli.pull.layout import INDEX_NAME, WORK_DIR
from aim_cli.util.fs import display_path, read_at_most, write_beside_at

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
#: An index larger than this is ignored (and a larger one is never written): 256 MiB holds
#: about three million chunks, a model of several TB.
MAX_INDEX_BYTES = 256 * 1024 * 1024
_MAX_FIELD = 2**63 - 1

_Nat = Annotated[int, msgspec.Meta(ge=0, le=_MAX_FIELD)]
_Stamp = Annotated[int, msgspec.Meta(ge=-_MAX_FIELD, le=_MAX_FIELD)]  # times before 1970 are negative


class IndexEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str
    size: _Nat
    mtime_ns: _Stamp
    ctime_ns: _Stamp
    ino: _Nat
    dev: _Nat
    blake3: mf.ChunkDigest
    chunks: list[tuple[mf.ChunkDigest, mf.ChunkSize]]

    def matches(self, st: os.stat_result) -> bool:
        return stat.S_ISREG(st.st_mode) and (self.size, self.mtime_ns, self.ctime_ns, self.ino, self.dev) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_ino,
            st.st_dev,
        )


class _IndexFile(msgspec.Struct, forbid_unknown_fields=True):
    format: int
    entries: list[IndexEntry]


_decoder = msgspec.json.Decoder(_IndexFile)
_HEX = frozenset("0123456789abcdef")


def _valid(entry: IndexEntry) -> bool:
    return (
        mf.check_path(entry.path) is None
        and set(entry.blake3) <= _HEX
        and all(set(d) <= _HEX for d, _ in entry.chunks)
        and sum(size for _, size in entry.chunks) == entry.size
    )


@dataclass(frozen=True)
class DestIndex:
    """The entries of a loaded index by path, and the index file's mtime (the racy cutoff)."""

    entries: dict[str, IndexEntry]
    written_ns: int = 0

    def trusted(self, path: str, st: os.stat_result) -> IndexEntry | None:
        """The entry of ``path`` if ``st`` (its lstat) matches it and its mtime is not racy."""
        entry = self.entries.get(path)
        if entry is None or not entry.matches(st) or entry.mtime_ns >= self.written_ns:
            return None
        return entry


EMPTY = DestIndex({})


def _open_work_dir(dest: Path) -> int:
    return os.open(dest / WORK_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def load_index(dest: Path) -> DestIndex:
    """DEST's index, or an empty one when there is none, or when it cannot be trusted whole
    (then with a warning naming why): never an exception for what the file holds."""
    try:
        dir_fd = _open_work_dir(dest)
    except OSError:
        return EMPTY  # no work directory (or not ours to read): nothing indexed
    try:
        try:
            fd = os.open(INDEX_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return EMPTY
        except OSError as e:
            return _ignored(dest, e.strerror or "cannot be opened")
        try:
            st = os.fstat(fd)
            why = _untrusted_file(st)
            if why:
                return _ignored(dest, why)
            data = read_at_most(fd, st.st_size)
            if len(data) > MAX_INDEX_BYTES:
                raise OSError(errno.EFBIG, "the index grew while it was read")
        finally:
            os.close(fd)
    except OSError as e:
        return _ignored(dest, e.strerror or "cannot be read")
    finally:
        os.close(dir_fd)
    try:
        parsed = _decoder.decode(data)
    except msgspec.DecodeError as e:
        return _ignored(dest, f"not an index of this aim_cli ({e})")
    if parsed.format != INDEX_FORMAT:
        return _ignored(dest, f"format {parsed.format}, this aim_cli reads {INDEX_FORMAT}")
    entries: dict[str, IndexEntry] = {}
    for entry in parsed.entries:
        if not _valid(entry) or entry.path in entries:
            return _ignored(dest, "an entry is invalid")
        entries[entry.path] = entry
    return DestIndex(entries, st.st_mtime_ns)


def _untrusted_file(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return "owned by another user, or writable by others"
    if st.st_size > MAX_INDEX_BYTES:
        return f"larger than {MAX_INDEX_BYTES // (1024 * 1024)} MiB"
    return None


def _ignored(dest: Path, why: str) -> DestIndex:
    log.warning(
        "ignoring %s (%s): files already in the destination are read again",
        display_path(dest / WORK_DIR / INDEX_NAME),
        why,
    )
    return EMPTY


def entry_of(path: str, st: os.stat_result, entry: mf.FileEntry) -> IndexEntry:
    return IndexEntry(
        path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, entry.blake3, list(entry.chunks)
    )


def write_index(dest: Path, entries: list[IndexEntry]) -> None:
    """Replace DEST's index with ``entries``: the old one removed, the new one written whole
    under its name (write_beside_at), mode 0600 whatever the old one had. Too large an index is
    not written. Failures are logged, never raised: the index saves reads, nothing depends on it."""
    data = msgspec.json.encode(_IndexFile(INDEX_FORMAT, entries))
    try:
        dir_fd = _open_work_dir(dest)
    except OSError:
        return
    try:
        with contextlib.suppress(FileNotFoundError):  # an old one's permission bits are not kept
            os.unlink(INDEX_NAME, dir_fd=dir_fd)
        if len(data) <= MAX_INDEX_BYTES:
            write_beside_at(dir_fd, INDEX_NAME, data, mode=0o600)
    except OSError as e:
        log.warning("could not write %s: %s", display_path(dest / WORK_DIR / INDEX_NAME), e.strerror)
    finally:
        os.close(dir_fd)


def carried_over(index: DestIndex, dest: Path, skip: set[str]) -> list[IndexEntry]:
    """The entries of paths outside ``skip`` still trusted (their files unchanged, their mtime
    not racy: a racy entry carried into a newer index would turn trusted unread): kept in the
    next index, so that files of another version left in DEST stay known."""
    kept = []
    for path, entry in index.entries.items():
        if path in skip:
            continue
        try:
            if index.trusted(path, os.lstat(dest / path)) is not None:
                kept.append(entry)
        except OSError:
            continue
    return kept
