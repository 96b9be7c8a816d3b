"""The push pipeline: walk, chunk and hash in parallel, store only missing chunks, commit last.

    walk DIR (one stat per entry) -> per file of at least the minimum chunk size (one thread
    each, pyfastcdc + blake3 release the GIL):
        cut_stream -> BLAKE3 each chunk -> not seen in this push and not stored?
            -> copy -> upload pool (``jobs`` wide, bounded in-flight bytes)
    smaller files (one chunk each) in batches, one task per batch (``jobs`` batches at once):
        read whole -> BLAKE3 (chunk digest = file digest) -> not seen, not stored? -> store inline
    all stored -> backend.sync() (one durability barrier) -> exclusive create of the manifest

A version is visible only once every blob it names is durable. A push that dies at any point
leaves at most orphan blobs, which ``repo gc`` frees.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

import blake3

from aim_cli import push_pairing
from aim_cli.chunking.cdc import Chunk, ChunkingParams, batches, hash_bytes, is_one_chunk
from aim_cli.defaults import DEFAULT_JOBS
from aim_cli.errors import StorageError, UsageError
from aim_cli.format import manifest as mf
from aim_cli.names import check_name
from aim_cli.progress import NullProgress
from aim_cli.push_scan import SourceFile, scan_source
from aim_cli.repository import Repository, VersionRef, leases
from aim_cli.util.fs import display_path
from aim_cli.util.ignores import Ignored
from aim_cli.util.patterns import PathFilter
from aim_cli.util.stamps import now_rfc3339, user_at_host
from aim_cli.util.walk import NotRegularFileError, open_regular

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushResult:
    model: str
    tag: str
    digest: str
    files: int
    total_size: int
    new_bytes: int  # raw bytes of the chunks this push stored
    new_chunks: int
    chunks: int
    already_pushed: bool
    elapsed: float
    skipped: tuple[str, ...] = ()  # top-level .aim* names of DIR, left out (aim_cli's own)
    new_stored_bytes: int = 0  # what they take in storage (format 2 compresses; format 1: = new_bytes)
    stored_size: int | None = None  # what the version's distinct chunks take in storage (None: not measured)
    reencoded: int = 0  # format 3: chunks stored as deltas by the pairing below
    delta_base: str | None = None  # format 3: "model:tag" of the version paired with (--delta, --base)
    ignored: tuple[str, ...] = ()  # the default ignores found in DIR (util.ignores), left out: top-most paths
    ignored_files: int = 0  # files under them
    ignored_bytes: int = 0

    @property
    def dedup_ratio(self) -> float:
        """Share of the version's bytes that were already stored."""
        return 0.0 if not self.total_size else 1 - self.new_bytes / self.total_size


class _Uploader:
    """Stores chunks the repository lacks, in parallel, with bounded in-flight memory. Progress
    counts a chunk once it is known stored (already there, or uploaded)."""

    def __init__(self, repo: Repository, jobs: int, index: Future | None, progress, *, dry_run: bool = False):
        self.repo = repo
        self.dry_run = dry_run  # count what would be stored, store nothing (push --dry-run's estimate)
        # Stored digests, when listing is cheaper than asking one by one (a Future: the listing
        # runs while the first files are being chunked). None: not uploading (the tag exists).
        self._index = index
        self.progress = progress
        self.pool = ThreadPoolExecutor(jobs, thread_name_prefix="aim-upload")
        self.slots = UploadSlots(jobs * 2, UPLOAD_BUDGET)
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.futures: list[Future] = []
        self.new_bytes = 0
        self.new_stored_bytes = 0
        self.new_chunks = 0
        # digest -> stored bytes of every distinct chunk of the version: its stored size.
        self.stored: dict[str, int] = {}
        self.failed = threading.Event()

    def _claim(self, digest: str) -> bool:
        """Whether this push must see to it that ``digest`` is stored: uploading, the first offer
        of it in this push, and not in the index of stored blobs (if there is one)."""
        if self._index is None:
            return False
        with self.lock:
            if digest in self.seen:
                return False
            self.seen.add(digest)
        index = self._index.result()
        if index is not None and digest in index:
            with self.lock:
                self.stored[digest] = index[digest]
            return False
        return True

    def offer(self, chunk: Chunk, data: memoryview) -> None:
        if not self._claim(chunk.digest):
            self.progress.advance(len(data))
            return
        self.slots.acquire(len(data))
        try:
            if self.failed.is_set():
                raise _Aborted
            payload = _copied(data)  # the stream buffer is reused after this call returns
            # Encoding (format 2 compresses) runs in the upload threads, beside the chunking threads.
            fut = self.pool.submit(self._store, chunk.digest, payload, chunk.element_size)
        except BaseException:  # not handed over: _store will not give its room back
            self.slots.release(len(data))
            raise
        with self.lock:
            self.futures.append(fut)

    def store_inline(self, digest: str, data: bytes) -> None:
        """Store a small file's only chunk in the calling thread (a batch task): no copy, no
        future. The caller advances the progress, once per batch."""
        if self._claim(digest):
            self._put_missing(digest, data)

    def _store(self, digest: str, payload: memoryview, element_size: int) -> None:
        try:
            self._put_missing(digest, payload, element_size)
            self.progress.advance(len(payload))
        except BaseException:
            self.failed.set()
            raise
        finally:
            self.slots.release(len(payload))

    def _put_missing(self, digest: str, payload, element_size: int = 1) -> None:
        assert self._index is not None  # set before any upload (_offer waits for it)
        if self._index.result() is None and (stored := self.repo.stored_size(digest)) is not None:
            with self.lock:
                self.stored[digest] = stored
            return
        if self.dry_run:
            with self.lock:
                self.new_bytes += len(payload)
                self.new_chunks += 1
            return
        stored = self.repo.put_blob(digest, payload, element_size)
        with self.lock:
            self.stored[digest] = stored
            self.new_bytes += len(payload)
            self.new_stored_bytes += stored
            self.new_chunks += 1

    def finish(self) -> None:
        for fut in self.futures:
            fut.result()

    def close(self) -> None:
        self.failed.set()
        self.pool.shutdown(wait=True, cancel_futures=True)


#: Raw chunk bytes handed to the upload threads and not yet stored, at most (one chunk always
#: passes). Each upload holds its chunk and, while it is stored, its encoded blob, and freed
#: buffers are kept for the next chunk (util/allocator.py), so the peak RSS follows this budget.
#: Counted in chunks alone (2 per thread), an S3 push's 32 threads held up to 64: 256 MiB of
#: random data pushed through `benchmarks/s3_bench.py --link`'s proxy to moto peaked at 254-275 MB
#: of RSS (305 MB to Ceph RGW before glibc's arenas were capped), over the 200 MB a transfer may
#: take. With 16/24/32 MiB: 164-175, 182-193 and 206-215 MB (3 runs each), the time within the
#: runs' spread; at 1 GiB, 173-177 MB with 16 and 201-206 MB with 24 (2 runs each). A local
#: push's 8 chunks seldom reach 16 MiB: 1 GiB of benchmarks/run.py's data pushed in a median
#: 1.73 s with it, 1.69 s without (5 alternating runs; 24 MiB: 1.68 s both).
UPLOAD_BUDGET = 16 * 1024 * 1024


class UploadSlots:
    """Chunks handed to the upload threads and not yet stored: at most ``count`` of them and
    ``budget`` bytes, except that one chunk always passes, whatever its size."""

    def __init__(self, count: int, budget: int):
        self.count, self.budget = count, budget
        self.held = 0
        self.bytes = 0
        self._changed = threading.Condition()

    def room_for(self, size: int) -> bool:
        return self.held == 0 or (self.held < self.count and self.bytes + size <= self.budget)

    def acquire(self, size: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.room_for(size))
            self.held += 1
            self.bytes += size

    def release(self, size: int) -> None:
        with self._changed:
            self.held -= 1
            self.bytes -= size
            self._changed.notify_all()


def _copied(data: memoryview) -> memoryview:
    """A copy of a chunk's bytes, made outside the GIL (numpy's copy loop releases it, where
    ``bytes(data)`` would hold it for the whole memcpy): the chunking threads hand chunks over
    while the upload threads encode (docs/design.md §5)."""
    import numpy as np  # lazily: a no-op push needs it no more than `--help` does

    return np.frombuffer(data, np.uint8).copy().data


class _Aborted(Exception):
    """Raised inside a chunking thread to stop it when another part of the push failed."""


def _changed(sf: SourceFile) -> UsageError:
    return UsageError(f"{display_path(sf.abspath)} changed while it was being pushed", "push again once it is stable")


def _unreadable(sf: SourceFile, e: OSError) -> UsageError:
    if e.errno == errno.ELOOP or isinstance(e, NotRegularFileError):  # a link or FIFO where the scan saw a file
        return _changed(sf)
    return UsageError(f"cannot read {display_path(sf.abspath)}: {e.strerror}", "check the file")


def _read_small(sf: SourceFile) -> bytes:
    """The whole content of a file smaller than a chunk: one open, one read, one fstat. The
    fstat after the read stands for the stat after chunking of bigger files: a file written to
    since the scan (its size or mtime moved) is refused. Never through a symlink that replaced
    the file since the scan, never blocking on a FIFO; at most ``size + 1`` bytes are read."""
    try:
        fd, _ = open_regular(sf.abspath)
    except OSError as e:
        raise _unreadable(sf, e) from None
    try:
        data = os.read(fd, sf.size + 1)
        while 0 < len(data) < sf.size:  # a short read before the end (rare on a regular file)
            more = os.read(fd, sf.size + 1 - len(data))
            if not more:
                break
            data += more
        st = os.fstat(fd)
    except OSError as e:
        raise _unreadable(sf, e) from None
    finally:
        os.close(fd)
    if len(data) != sf.size or not stat.S_ISREG(st.st_mode) or st.st_size != sf.size or st.st_mtime_ns != sf.mtime_ns:
        raise _changed(sf)
    return data


def push(
    repo: Repository,
    model: str,
    tag: str,
    source: str | os.PathLike,
    *,
    message: str = "",
    jobs: int = DEFAULT_JOBS,
    follow_symlinks: bool = False,
    progress=None,
    params: ChunkingParams | None = None,
    delta: bool = False,
    base: str | None = None,
    references: Sequence[str | os.PathLike] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    default_ignores: bool = True,
) -> PushResult:
    """Push ``source`` as ``model:tag`` under a shared lease (leases.py), so that a concurrent
    `repo gc` cannot free a blob this push found stored and skipped. In a format 3 repository,
    with ``delta`` or ``base``, then re-encode one pair of versions (push_pairing.py: the newest
    version before, or ``base`` = "TAG" or "MODEL:TAG"), reading raw chunks from ``source`` and
    ``references`` before the repository; else `repo optimize` does it later. ``include`` and
    ``exclude`` select the files as pull's do; ``default_ignores`` leaves out .git/,
    .cache/huggingface/, __pycache__/ and .DS_Store at any depth (util.ignores)."""
    check_name("model", model)
    check_name("tag", tag)
    check_message(message)
    started = time.monotonic()
    skipped: list[str] = []
    ignored = Ignored() if default_ignores else None
    selection = PathFilter.of(include, exclude)
    # A refused DIR touches no storage.
    files = scan_source(
        source, follow_symlinks=follow_symlinks, on_skip=skipped.append, selection=selection, ignored=ignored
    )
    # What the lease does not guard is read beside aim-repo.json: one round trip, not three, from
    # a distant store (docs/design.md §5). The tag's version, if stored, is checked again at the
    # commit; an error of init's comes first, as when these reads came after it.
    with ThreadPoolExecutor(2, thread_name_prefix="aim-push-read") as reads:
        alias_check = reads.submit(repo.refuse_tag_is_alias, model, tag)
        stored = reads.submit(repo.find_version, model, tag)
        params = repo.init(params)  # before the lease: a root that cannot be a repository gets nothing written
        alias_check.result()  # an alias never shadows a tag (docs/design.md §2.1)
        existing = stored.result()
    pairing = push_pairing.resolve(repo, model, tag, delta=delta, base=base, references=references)
    with leases.acquire(repo, leases.SHARED, "push") as lease:
        result = _push(
            repo,
            model,
            tag,
            files,
            existing=existing,
            lease=lease,
            started=started,
            message=message,
            jobs=jobs,
            progress=progress,
            params=params,
            delta_base=pairing.name if pairing else None,
        )
    result = replace(result, skipped=tuple(skipped))
    if ignored is not None:
        result = replace(
            result, ignored=tuple(sorted(ignored.paths)), ignored_files=ignored.files, ignored_bytes=ignored.bytes
        )
    if pairing is not None and pairing.base is not None:
        result = replace(result, delta_base=pairing.name)
        if not result.already_pushed:
            pushed = repo.get_version(model, tag)
            reencoded = push_pairing.reencode(repo, pairing, pushed, {f.path: f.abspath for f in files})
            result = replace(result, reencoded=reencoded)
    return result


def check_message(message: str) -> None:
    """The message is stored in the manifest, which is UTF-8 JSON: a command line argument that
    is not UTF-8 (it arrives as lone surrogates) cannot be stored as given."""
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("the --message is not valid UTF-8", "write the message as UTF-8 text") from None


def _push(
    repo: Repository,
    model: str,
    tag: str,
    files: list[SourceFile],
    *,
    existing: VersionRef | None,
    lease: leases.Lease,
    started: float,
    message: str,
    jobs: int,
    progress,
    params: ChunkingParams | None,
    delta_base: str | None = None,
) -> PushResult:
    """``existing``: the version stored under the tag. Then the files are hashed without
    uploading, and the push is either "already pushed" or a conflict: nothing is written."""
    progress = progress or NullProgress()
    total = sum(f.size for f in files)
    fmt = repo.format()
    params = fmt.chunking
    expected_chunks = total // (params.avg_size + params.min_size) + len(files)
    lister = ThreadPoolExecutor(1, thread_name_prefix="aim-list")
    index = None if existing else lister.submit(repo.stored_blob_index, expected_chunks)
    uploader = _Uploader(repo, jobs, index, progress)
    progress.start("push", total)
    try:
        entries = _FileHasher(fmt, uploader, progress).run(files, jobs)
    except BaseException:
        lister.shutdown(wait=True, cancel_futures=True)
        progress.close()
        raise
    lister.shutdown()
    uploader.close()
    progress.close()
    return _commit(
        repo,
        model,
        tag,
        files,
        entries,
        existing=existing,
        uploader=uploader,
        lease=lease,
        started=started,
        message=message,
        total=total,
        delta_base=delta_base,
    )


def estimate(
    repo: Repository, fmt, files: list[SourceFile], *, index: dict[str, int] | None, counting: bool, jobs: int, progress
) -> tuple[dict[str, mf.FileEntry], int, int]:
    """A dry run's pass (push_plan.py): cut and hash ``files`` as a push would, and count the raw
    bytes and the chunks the repository does not hold, storing nothing. ``index``: its stored
    blobs (None: ask chunk by chunk); ``counting`` False (the tag exists): hash only. Returns
    the entries by path, the new bytes and the new chunks."""
    listed: Future = Future()
    listed.set_result(index)
    uploader = _Uploader(repo, jobs, listed if counting else None, progress, dry_run=True)
    progress.start("hash", sum(f.size for f in files))
    try:
        entries = _FileHasher(fmt, uploader, progress).run(files, jobs)
    finally:
        uploader.close()
        progress.close()
    return entries, uploader.new_bytes, uploader.new_chunks


class _FileHasher:
    """Cuts and hashes every file of a push, handing each chunk to the uploader as it is cut.
    Large files go to one thread per core (pyfastcdc and blake3 release the GIL); files of one
    chunk are read whole in batches. The first failure stops every other worker."""

    def __init__(self, fmt, uploader: _Uploader, progress):
        self.fmt = fmt
        self.uploader = uploader
        self.progress = progress
        self.stop = threading.Event()
        self.entries: dict[str, mf.FileEntry] = {}

    def chunk_one(self, sf: SourceFile) -> None:
        whole = blake3.blake3()
        chunks: list[tuple[str, int]] = []
        try:
            for c in self.fmt.chunk_file(sf.abspath, whole=whole, on_chunk=self.uploader.offer):
                if self.stop.is_set():
                    raise _Aborted
                chunks.append((c.digest, c.size))
        except StorageError:
            raise  # an upload failed (StorageError is an OSError): not a file we cannot read
        except OSError as e:
            raise _unreadable(sf, e) from None
        size = sum(s for _, s in chunks)
        after = os.stat(sf.abspath)
        if size != sf.size or after.st_size != sf.size or after.st_mtime_ns != sf.mtime_ns:
            raise _changed(sf)
        self.entries[sf.path] = mf.FileEntry(sf.path, size, sf.mode, whole.hexdigest(), chunks)

    def push_small(self, batch: list[SourceFile]) -> None:
        """Files of one chunk, one after the other: read whole, hash once (the chunk digest is
        the file digest), store inline. Local puts are cheap; remote ones overlap across batches."""
        done = 0
        for sf in batch:
            if self.stop.is_set():
                raise _Aborted
            data = _read_small(sf)
            digest = hash_bytes(data)
            if data:
                self.uploader.store_inline(digest, data)
            self.entries[sf.path] = mf.FileEntry(sf.path, sf.size, sf.mode, digest, [(digest, sf.size)] if data else [])
            done += sf.size
        self.progress.advance(done)

    def run(self, files: list[SourceFile], jobs: int) -> dict[str, mf.FileEntry]:
        """Every file's entry by path, once every chunk is stored; on any failure the uploader is
        closed and the workers have stopped before the exception propagates."""
        params = self.fmt.chunking
        small = [sf for sf in files if is_one_chunk(sf.size, params)]
        large = sorted((sf for sf in files if not is_one_chunk(sf.size, params)), key=lambda f: -f.size)
        small_batches = list(batches(small, lambda sf: sf.size, workers=jobs))
        hashers = ThreadPoolExecutor(max(1, min(os.cpu_count() or 2, len(large))), thread_name_prefix="aim-chunk")
        batchers = ThreadPoolExecutor(max(1, min(jobs, len(small_batches))), thread_name_prefix="aim-small")
        try:
            # Largest files first: the last thread to finish is not left with the biggest shard.
            futures = [hashers.submit(self.chunk_one, sf) for sf in large]
            futures += [batchers.submit(self.push_small, batch) for batch in small_batches]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failures = [exc for f in done if (exc := f.exception()) is not None]
            for exc in failures:
                if not isinstance(exc, _Aborted):
                    raise exc
            if failures:
                self.uploader.finish()  # raises the upload failure that aborted the chunking
            for fut in futures:
                fut.result()
            self.uploader.finish()
        except BaseException:
            self.stop.set()
            self.uploader.close()  # first: a hasher blocked on a full upload queue is released
            hashers.shutdown(wait=True, cancel_futures=True)
            batchers.shutdown(wait=True, cancel_futures=True)
            raise
        hashers.shutdown()
        batchers.shutdown()
        return self.entries


def _commit(
    repo: Repository,
    model: str,
    tag: str,
    files: list[SourceFile],
    entries: dict[str, mf.FileEntry],
    *,
    existing,
    uploader: _Uploader,
    lease: leases.Lease,
    started: float,
    message: str,
    total: int,
    delta_base: str | None = None,
) -> PushResult:
    """Write the manifest (the commit point) once every blob is durable, or compare with the
    version already stored under the tag."""
    manifest = mf.Manifest(
        format=mf.FORMAT,
        model=model,
        tag=tag,
        created_at=now_rfc3339(),
        created_by=user_at_host(),
        message=message,
        total_size=total,
        files=[entries[f.path] for f in files],
    )
    n_chunks = sum(len(e.chunks) for e in manifest.files)
    if existing is not None:
        kept = repo.against_stored(existing, manifest)  # TagExistsError unless the same files
        return PushResult(model, tag, kept.digest, len(files), total, 0, 0, n_chunks, True, time.monotonic() - started)
    repo.sync()  # every blob durable before the manifest that names it exists
    lease.check()  # a lease judged stale may have let gc free blobs this push skipped: do not commit
    distinct = {d for e in manifest.files for d, _ in e.chunks}
    # Every distinct chunk was either found stored (with its size) or stored by this push.
    stored_size = sum(uploader.stored.values()) if uploader.stored.keys() == distinct else None
    result = repo.commit(
        manifest, stored_size=stored_size, delta_base=delta_base, new_stored_size=uploader.new_stored_bytes
    )
    created = result.created
    return PushResult(
        model,
        tag,
        result.digest,
        len(files),
        total,
        uploader.new_bytes if created else 0,
        uploader.new_chunks if created else 0,
        n_chunks,
        not created,
        time.monotonic() - started,
        new_stored_bytes=uploader.new_stored_bytes if created else 0,
        stored_size=stored_size,
    )
