"""The pull pipeline: resolve once, plan from what is on disk, fetch the rest in parallel, rename
each file into place only once its whole-file digest matches.

Layout inside DEST while a pull runs (names starting with ``.aim`` never appear in a manifest):

    DEST/.aim/pull.lock                   O_EXCL lock: {"pid", "host"}; stale once that process is gone
    DEST/.aim/partial/<id>                a file being assembled; id = BLAKE3(path NUL file digest)[:32]

The partial names are deterministic, so a rerun after a kill finds them and re-hashes their chunks
against the manifest (which knows each chunk's offset, size and digest): only what is still
missing is fetched, and no second copy of the model is made. Chunk sources, cheapest first:
the partial file itself, the file already at the final path (an earlier version, re-chunked),
the same path under each ``--reference`` directory, the chunk cache, then the repository. Every
chunk's BLAKE3 is checked before it is written; a local source that does not match is skipped.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from aim_cli import manifest as mf
from aim_cli.chunking import file_digest, iter_chunks
from aim_cli.config import check_name
from aim_cli.errors import IntegrityError, LockHeldError, StorageError, UsageError
from aim_cli.fsutil import fsync_dir, start_writeback, sync_filesystem
from aim_cli.leases import owner_is_gone
from aim_cli.progress import NullProgress
from aim_cli.store import Repository, VersionRef

WORK_DIR = ".aim"
LOCK_NAME = "pull.lock"
PARTIAL_DIR = "partial"


@dataclass
class PullResult:
    model: str
    tag: str
    digest: str
    files: int
    total_size: int
    fetched_bytes: int = 0  # downloaded from the repository
    reused_bytes: int = 0  # taken from DEST, --reference directories or kept files
    cached_bytes: int = 0  # taken from the chunk cache
    fetched_chunks: int = 0
    kept_files: int = 0  # already complete and verified in DEST
    newest: bool = False  # the tag was chosen as the newest version
    elapsed: float = 0.0


def resolve_version(repo: Repository, model: str, tag: str | None, digest: str | None) -> tuple[VersionRef, bool]:
    """The version to pull, resolved once. Without a tag: the newest by created_at."""
    check_name("model", model)
    if digest is not None and not mf.HEX64.fullmatch(digest.lower()):
        raise UsageError("--digest takes the full 64-hex-character manifest digest",
                         "copy it from the push output or `aim_cli model versions`")
    if tag is None:
        ref, newest = repo.list_versions(model)[-1], True
    else:
        ref, newest = repo.get_version(model, tag), False
    if digest is not None and ref.digest != digest.lower():
        raise IntegrityError(
            f"version {ref.manifest.tag!r} of model {model!r} has digest {ref.digest}, not the pinned {digest.lower()}",
            "the version is not the one you pinned; nothing was downloaded",
        )
    return ref, newest


# -- the lock ----------------------------------------------------------------------------------------
class DestLock:
    """An exclusive lock file in DEST, created with O_EXCL (no flock: it lies on NFS). A lock left
    by a process of this host that no longer exists is stale and taken over."""

    def __init__(self, dest: Path):
        self.path = dest / WORK_DIR / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        _make_work_dir(self.path.parent)
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_bytes())
                    pid, host = int(owner["pid"]), str(owner["host"])
                except FileNotFoundError:
                    continue
                except (ValueError, KeyError, TypeError):
                    pid, host = -1, socket.gethostname()  # torn write by a dead process
                if owner_is_gone(host, pid):
                    self.path.unlink(missing_ok=True)
                    continue
                raise LockHeldError(
                    f"another pull into {self.path.parent.parent} is running (pid {pid} on {host})",
                    f"wait for it to finish; if it is gone, delete {self.path}",
                ) from None
            with os.fdopen(fd, "wb") as f:
                f.write(me)
            self.held = True
            return
        raise LockHeldError(f"could not take the lock {self.path}", "retry")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _make_work_dir(path: Path) -> None:
    """Create one of pull's own directories inside DEST, refusing a symlink in its place: the
    lock and partial files must not land outside DEST."""
    try:
        path.mkdir()
    except FileExistsError:
        pass
    except OSError as e:
        raise StorageError(f"cannot create {path}: {e.strerror}", "check the destination's permissions") from None
    if path.is_symlink() or not path.is_dir():
        raise UsageError(f"{path} is not a directory (a symlink or a file)",
                         "pull never writes through a symlink in its destination: remove it and rerun")


# -- planning --------------------------------------------------------------------------------------
def _partial_name(entry: mf.FileEntry) -> str:
    return blake3.blake3(f"{entry.path}\0{entry.blake3}".encode()).hexdigest()[:32]


def _safe_parent(dest: Path, rel: str) -> Path:
    """The directory that will hold ``rel``, refusing to go through a symlink inside DEST."""
    parent = dest
    for part in rel.split("/")[:-1]:
        parent = parent / part
        if parent.is_symlink():
            raise UsageError(
                f"{parent} is a symlink; pull never writes through a symlink in its destination",
                "remove the link or pull into another directory",
            )
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"{parent} exists and is not a directory", "move it away or pull elsewhere")
    return parent


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


@dataclass
class _FilePlan:
    entry: mf.FileEntry
    final: Path
    partial: Path
    have: set[int] = field(default_factory=set)  # indexes of chunks already right in the partial
    offsets: list[int] = field(default_factory=list)
    remaining: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _offsets(entry: mf.FileEntry) -> list[int]:
    out, pos = [], 0
    for _, size in entry.chunks:
        out.append(pos)
        pos += size
    return out


def _chunks_in_place(path: Path, entry: mf.FileEntry, offsets: list[int], advance=None) -> set[int]:
    """Indexes of the chunks of ``entry`` whose bytes are already right at their offsets in
    ``path`` (a partial file, or an earlier file at the final path). One sequential read."""
    present: set[int] = set()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return present
    try:
        for i, ((digest, size), offset) in enumerate(zip(entry.chunks, offsets)):
            data = os.pread(fd, size, offset)
            if len(data) == size and blake3.blake3(data).hexdigest() == digest:
                present.add(i)
            if advance is not None:
                advance(size)
    finally:
        os.close(fd)
    return present


class _LocalSources:
    """Chunks found in local files (an earlier version at the final path, --reference dirs,
    partial files of another version's pull), indexed by digest. Files are re-chunked with the
    repository's parameters (content-defined: unchanged data cuts the same chunks even when it
    moved); chunks already verified in place are added as they are."""

    def __init__(self, params):
        self.params = params
        self.index: dict[str, tuple[str, int, int]] = {}
        self.lock = threading.Lock()

    def add(self, path: Path, chunks) -> None:
        with self.lock:
            for digest, offset, size in chunks:
                self.index.setdefault(digest, (str(path), offset, size))

    def add_file(self, path: Path) -> None:
        if not _regular_file(path):
            return
        try:
            self.add(path, [(c.digest, c.offset, c.size) for c in iter_chunks(path, self.params)])
        except OSError:
            pass

    def read(self, digest: str) -> bytes | None:
        """The chunk's bytes, verified, or None (not indexed, or changed since)."""
        where = self.index.get(digest)
        if where is None:
            return None
        path, offset, size = where
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                data = os.pread(fd, size, offset)
            finally:
                os.close(fd)
        except OSError:
            return None
        if blake3.blake3(data).hexdigest() != digest:
            return None  # changed since it was indexed: fetch instead
        return data


# -- the pull ----------------------------------------------------------------------------------------
def pull(repo: Repository, model: str, dest: str | os.PathLike, *, tag: str | None = None,
         digest: str | None = None, jobs: int = 8, references: Sequence[str | os.PathLike] = (),
         cache=None, progress=None) -> PullResult:
    started = time.monotonic()
    progress = progress or NullProgress()
    ref, newest = resolve_version(repo, model, tag, digest)
    m = ref.manifest
    result = PullResult(model, m.tag, ref.digest, len(m.files), m.total_size, newest=newest)

    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"destination {dest} exists and is not a directory", "choose another DEST")
    for ref_dir in references:
        if not Path(ref_dir).is_dir():
            raise UsageError(f"--reference {ref_dir} is not a directory", "check the path")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create {dest}: {e.strerror}", "check the path and its permissions") from None
    dest = dest.absolute()
    lock = DestLock(dest)
    lock.acquire()
    try:
        _pull_locked(repo, m, dest, result, jobs, references, cache, progress)
    finally:
        lock.release()
        for d in (dest / WORK_DIR / PARTIAL_DIR, dest / WORK_DIR):
            try:
                d.rmdir()  # only when empty: partial files of an interrupted pull stay for the rerun
            except OSError:
                pass
    result.elapsed = time.monotonic() - started
    return result


def _pull_locked(repo, m: mf.Manifest, dest: Path, result: PullResult, jobs: int, references, cache,
                 progress) -> None:
    partial_dir = dest / WORK_DIR / PARTIAL_DIR
    _make_work_dir(partial_dir)
    finals = [(e, _safe_parent(dest, e.path) / e.path.rsplit("/", 1)[-1]) for e in m.files]
    current = {_partial_name(e) for e, _ in finals}
    # Partial files of another version's interrupted pull: a source of chunks, removed at the end.
    leftovers = [p for p in partial_dir.iterdir() if p.name not in current]
    sources = _LocalSources(repo.params())
    stats_lock = threading.Lock()

    def count(attr: str, n: int) -> None:
        with stats_lock:
            setattr(result, attr, getattr(result, attr) + n)

    def plan_file(entry: mf.FileEntry, final: Path) -> _FilePlan | None:
        """What is already on disk for this file: None if the final file is complete. Read-only."""
        plan = _FilePlan(entry, final, partial_dir / _partial_name(entry), offsets=_offsets(entry))
        if final.is_dir() and not final.is_symlink():
            raise UsageError(f"{final} is a directory, the version has a file there", "move it away or pull elsewhere")
        if _regular_file(final):
            same_size = final.stat().st_size == entry.size
            in_place = _chunks_in_place(final, entry, plan.offsets, progress.advance) if same_size else set()
            if len(in_place) == len(entry.chunks):  # every byte verified chunk by chunk: complete
                if stat.S_IMODE(final.stat().st_mode) != entry.mode:
                    os.chmod(final, entry.mode)
                count("kept_files", 1)
                count("reused_bytes", entry.size)
                return None
            sources.add(final, [(entry.chunks[i][0], plan.offsets[i], entry.chunks[i][1]) for i in in_place])
            if len(in_place) * 2 < len(entry.chunks):  # changed beyond in-place edits: look for moved data
                sources.add_file(final)
        if _regular_file(plan.partial):
            plan.have = _chunks_in_place(plan.partial, entry, plan.offsets, progress.advance)
        if len(plan.have) < len(entry.chunks):
            for ref_dir in references:
                sources.add_file(Path(ref_dir) / entry.path)
        return plan

    # Plan: files hashed and re-chunked in parallel threads (blake3 and pyfastcdc release the GIL).
    # Checking a large model already on disk takes a while: it gets a bar of its own.
    on_disk = sum(e.size for e, final in finals if _regular_file(final) or _regular_file(partial_dir / _partial_name(e)))
    if on_disk:
        progress.start("check", on_disk)
    with ThreadPoolExecutor(max(1, min(os.cpu_count() or 2, len(finals) + len(leftovers))),
                            thread_name_prefix="aim-plan") as planners:
        for leftover in leftovers:
            planners.submit(sources.add_file, leftover)
        plans = [p for p in planners.map(lambda ef: plan_file(*ef), finals) if p is not None]
    progress.close()

    needed = sum(p.entry.size - sum(p.entry.chunks[i][1] for i in p.have) for p in plans)
    free = shutil.disk_usage(dest).free
    if needed > free:
        import humanize

        raise StorageError(
            f"not enough space in {dest}: the pull needs {humanize.naturalsize(needed, binary=True)}, "
            f"{humanize.naturalsize(free, binary=True)} is available",
            "free some space or pull elsewhere",
        )

    if needed:
        progress.start("pull", needed)
    stop = threading.Event()

    verified: list[_FilePlan] = []

    def finalize(plan: _FilePlan) -> None:
        """Check the assembled file against its whole-file digest; the rename comes at the end."""
        _finish_partial(plan)
        if file_digest(plan.partial) != plan.entry.blake3:
            raise IntegrityError(
                f"{plan.entry.path} does not match its digest after assembly",
                "the destination disk may be failing; rerun the pull",
            )
        # Verified (the re-read came from the page cache): start its writeback now, so the disk
        # writes it while other files are fetched and the final syncfs waits only for the rest.
        fd = os.open(plan.partial, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            start_writeback(fd)
        finally:
            os.close(fd)
        with stats_lock:
            verified.append(plan)

    def fill(plan: _FilePlan, index: int) -> None:
        """Put one chunk in place from the cheapest verified source, then finalize the file if
        it was its last."""
        if stop.is_set():
            return
        chunk_digest, size = plan.entry.chunks[index]
        data = sources.read(chunk_digest)
        if data is not None:
            count("reused_bytes", size)
        elif cache is not None and (data := cache.get(chunk_digest, size)) is not None:
            count("cached_bytes", size)
        else:
            data = repo.get_blob(chunk_digest, size, context=f"{m.model}:{m.tag}/{plan.entry.path}")
            count("fetched_bytes", size)
            count("fetched_chunks", 1)
            if cache is not None:
                cache.put(chunk_digest, data)
        _write_at(plan.partial, plan.offsets[index], data)
        progress.advance(size)
        with plan.lock:
            plan.remaining -= 1
            last = plan.remaining == 0
        if last:
            finalize(plan)

    # Execute: one task per missing chunk; at most ``jobs`` chunks are in memory at once. The
    # main thread only submits: its syscalls would contend for the GIL with the workers'.
    pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix="aim-fetch")
    futures = []
    try:
        for plan in plans:
            result.reused_bytes += sum(plan.entry.chunks[i][1] for i in plan.have)
            missing = [i for i in range(len(plan.entry.chunks)) if i not in plan.have]
            if not missing:
                futures.append(pool.submit(finalize, plan))
                continue
            plan.remaining = len(missing)
            futures.extend(pool.submit(fill, plan, i) for i in missing)
        wait(futures, return_when=FIRST_EXCEPTION)
        for fut in futures:
            if fut.done():
                fut.result()  # the first failure, before waiting for the rest
        for fut in futures:
            fut.result()
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
        try:  # the files that did complete and verify get their final names all the same
            _commit_files(dest, verified)
        except Exception:
            pass  # they stay in the partial directory; the rerun finds them
        raise
    pool.shutdown()
    progress.close()
    _commit_files(dest, verified)
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)


def _commit_files(dest: Path, verified: list[_FilePlan]) -> None:
    """Give verified files their final names. Their bytes are made durable first, all at once
    (one syncfs, where an fsync per file costs seconds for a model of thousands of small files), so
    that after a power loss no final name holds a file whose data did not reach the disk."""
    if not verified:
        return
    sync_filesystem(dest)
    parents = set()
    for plan in verified:
        parent = _safe_parent(dest, plan.entry.path)
        try:
            parent.mkdir(parents=True, exist_ok=True)
            os.replace(plan.partial, plan.final)
        except OSError as e:
            raise _dest_error(e, plan.final) from None
        parents.add(parent)
    for parent in parents:
        fsync_dir(parent)


def _dest_error(e: OSError, path: Path) -> Exception:
    if e.errno == errno.ELOOP:
        return UsageError(f"{path} is a symlink; pull never writes through one", "remove it and rerun")
    if e.errno == errno.ENOSPC:
        return StorageError(f"disk full while writing {path}", "free some space and rerun: the pull resumes")
    return StorageError(f"cannot write {path}: {e.strerror}", "check the destination's permissions")


def _finish_partial(plan: _FilePlan) -> None:
    """Give the assembled partial file its exact size (an empty file has had no write) and mode."""
    try:
        fd = os.open(plan.partial, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, plan.entry.size)
            os.fchmod(fd, plan.entry.mode)
        finally:
            os.close(fd)
    except OSError as e:
        raise _dest_error(e, plan.partial) from None


def _write_at(path: Path, offset: int, data: bytes) -> None:
    """Write a chunk at its offset, creating the partial file on its first write. Files are
    opened per write, not held open: a model of many files would exhaust the descriptor limit."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
        finally:
            os.close(fd)
    except OSError as e:
        raise _dest_error(e, path) from None
