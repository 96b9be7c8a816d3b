"""The pull pipeline: resolve once, plan from what is on disk, fetch the rest in parallel, rename
each file into place only once its whole-file digest matches, then give it its mode.

Three modules, three stages:

    plan.py           ``plan_pull`` reads DEST (what is complete, what each partial file holds,
                      which local files can provide chunks, what --delete removes) and returns a
                      typed ``PullPlan``; ``dry_run`` (``--dry-run``) returns it and stops there.
    pipeline.py       ``execute`` runs a plan: ``_Assembler`` puts each missing chunk in place
                      from the first source of a ``SourceChain`` (sources.py: DEST's files,
                      --reference directories, the chunk cache, the repository) that has it, and
                      verifies each file once its last chunk is written.
    dest_writer.py    every write into DEST: the lock, DEST prepared for planning (work
                      directories, case probe, partial files' mode), partial files, the renames
                      (one syncfs first), modes, --delete.

Every chunk's BLAKE3 is checked before it is written; a local source that does not match is skipped.
Files of at most one chunk (most files of a model but its weights) go in batches, one task each,
at every stage: such a file is written whole in one open/write/close, verified from its bytes in
memory (its digest is its only chunk's), and renamed after the one syncfs like every other file.

``--include``/``--exclude`` (aim_cli/util/patterns.py) select the files planned: the free-space check,
progress and summary count those only, and --delete removes only files the patterns select.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from aim_cli.chunking.cdc import batches, hash_bytes
from aim_cli.defaults import DEFAULT_JOBS
from aim_cli.errors import IntegrityError, StorageError, UsageError
from aim_cli.progress import NullProgress, Progress
from aim_cli.pull.assembly_digest import InOrderDigest, file_hexdigest
from aim_cli.pull.cache import ChunkCache
from aim_cli.pull.copy_runs import MAX_RUN, CopyRun, plan_copies, segments
from aim_cli.pull.dest_access import dest_error, inspect_dest, open_regular
from aim_cli.pull.dest_index import EMPTY, carried_over, entry_of, load_index, write_index
from aim_cli.pull.dest_writer import (
    commit_files,
    copy_at,
    delete_files,
    locked_dest,
    make_dirs,
    prepare_dest,
    refuse_repository_dest,
    set_mode,
    truncate_partial,
    write_at,
)
from aim_cli.pull.plan import FilePlan, PullPlan, plan_pull
from aim_cli.pull.sources import CacheSource, ChunkSource, RepositorySource, SourceChain
from aim_cli.repository import Repository, VersionRef
from aim_cli.util.fs import directory_argument, display_path, start_writeback
from aim_cli.util.patterns import PathFilter
from aim_cli.util.walk import is_own_name

log = logging.getLogger(__name__)
EMPTY_DIGEST = hash_bytes(b"")  # the whole-file digest of an empty file, which has no chunks


@dataclass
class PullResult:
    """What a pull did. ``files`` and ``total_size`` count the selected files (all of the
    version's without --include/--exclude)."""

    model: str
    tag: str
    digest: str
    files: int
    total_size: int
    fetched_bytes: int = 0  # downloaded from the repository, as stored (on the wire; format 2 compresses)
    reused_bytes: int = 0  # taken from DEST, --reference directories or kept files
    cached_bytes: int = 0  # taken from the chunk cache
    fetched_chunks: int = 0
    kept_files: int = 0  # already complete and verified in DEST
    newest: bool = False  # the tag was chosen as the newest version
    elapsed: float = 0.0
    fetched_raw_bytes: int = 0  # the chunk bytes those downloads gave
    deleted: list[str] = field(default_factory=list)  # files --delete removed (paths relative to DEST)
    delta_chunks: int = 0  # of fetched_chunks, those taken as deltas against a local chunk (format 3)


# -- the pull ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Request:
    """A pull's arguments, checked: the version resolved once, DEST and the references
    validated, the selected paths."""

    ref: VersionRef
    newest: bool
    dest: Path
    paths: list[str]
    plan_args: dict


def _request(
    repo: Repository,
    model: str,
    dest: str | os.PathLike,
    *,
    tag: str | None,
    digest: str | None,
    references: Sequence[str | os.PathLike],
    repo_roots: Iterable[str | os.PathLike],
    include: Iterable[str],
    exclude: Iterable[str],
    delete: bool,
    progress: Progress,
    cache_root: Path | None = None,
) -> _Request:
    selection = PathFilter.of(include, exclude)
    path = directory_argument(dest, "the destination")
    refs = [directory_argument(r, "--reference") for r in references]
    # aim-repo.json is read beside the version (one round trip for both, docs/design.md §13); a
    # format this client cannot read is refused before DEST is touched.
    with ThreadPoolExecutor(1, thread_name_prefix="aim-format") as pool:
        stored_format = pool.submit(repo.format)
        ref, newest = repo.resolve_version(model, tag, digest)
        selection.check([e.path for e in ref.manifest.files], log.warning)
        stored_format.result()

    if path.exists() and not path.is_dir():
        raise UsageError(f"destination {display_path(path)} exists and is not a directory", "choose another DEST")
    for ref_dir in refs:
        if not ref_dir.is_dir():
            raise UsageError(f"--reference {display_path(ref_dir)} is not a directory", "check the path")
    refuse_repository_dest(path, repo_roots)
    if delete:
        for ref_dir in refs:
            _refuse_inside_dest(path, ref_dir, "--reference")
        if cache_root is not None:
            _refuse_inside_dest(path, cache_root, "--cache-dir")
    plan_args = dict(selection=selection, newest=newest, references=refs, delete=delete, progress=progress)
    paths = [e.path for e in ref.manifest.files if selection.selects(e.path)]
    return _Request(ref, newest, path, paths, plan_args)


def _refuse_inside_dest(dest: Path, inner: Path, what: str) -> None:
    """--delete makes DEST exactly the version, so a --reference or --cache-dir that is DEST or
    lies inside it would be deleted: refused (UsageError), links resolved. One under a top-level
    DEST/.aim* name is let be: --delete never touches pull's own names."""
    outer, path = Path(os.path.realpath(dest)), Path(os.path.realpath(inner))
    if path != outer and outer not in path.parents:
        return
    inside = path.relative_to(outer).parts
    if inside and is_own_name(inside[0]):
        return
    raise UsageError(
        f"{what} {display_path(inner)} lies inside the destination {display_path(dest)}, "
        "which --delete makes exactly the version: it would be deleted",
        f"move {what} out of the destination, or pull without --delete",
    )


def dry_run(
    repo: Repository,
    model: str,
    dest: str | os.PathLike,
    *,
    tag: str | None = None,
    digest: str | None = None,
    references: Sequence[str | os.PathLike] = (),
    progress: Progress | None = None,
    repo_roots: Iterable[str | os.PathLike] = (),
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    delete: bool = False,
    cache_dir: str | os.PathLike | None = None,
    verify_existing: bool = False,
) -> PullPlan:
    """The ``PullPlan`` of a pull with these arguments, having created or changed nothing.
    ``cache_dir``: the chunk cache the pull would use (refused inside DEST with ``delete``)."""
    request = _request(
        repo,
        model,
        dest,
        tag=tag,
        digest=digest,
        references=references,
        repo_roots=repo_roots,
        include=include,
        exclude=exclude,
        delete=delete,
        progress=progress or NullProgress(),
        cache_root=Path(cache_dir).expanduser() if cache_dir else None,
    )
    dest = request.dest.absolute()
    facts = inspect_dest(dest, request.paths)
    index = EMPTY if verify_existing else load_index(dest)
    return plan_pull(repo, request.ref, dest, facts, index=index, **request.plan_args)


def pull(
    repo: Repository,
    model: str,
    dest: str | os.PathLike,
    *,
    tag: str | None = None,
    digest: str | None = None,
    jobs: int = DEFAULT_JOBS,
    references: Sequence[str | os.PathLike] = (),
    cache: ChunkCache | None = None,
    progress: Progress | None = None,
    repo_roots: Iterable[str | os.PathLike] = (),
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    delete: bool = False,
    verify_existing: bool = False,
) -> PullResult:
    """Pull a version into ``dest`` (``dry_run`` plans the same pull without acting).
    ``repo_roots``: the local repositories DEST must stay out of (the config's), besides any
    directory holding an aim-repo.json (see refuse_repository_dest).
    ``include``/``exclude``: patterns selecting the files (aim_cli/util/patterns.py); an include
    that matches no file is a UsageError, an exclude that matches none a warning (logged).
    ``delete``: remove the regular files of DEST, within the patterns, that the version does
    not hold (after the pull's files are in place; directories this empties go too).
    ``verify_existing``: read every file already in DEST, trusting nothing of DEST's index
    (dest_index.py: without it, a file the index vouches for, its stat unchanged, is not read)."""
    started = time.monotonic()
    progress = progress or NullProgress()
    request = _request(
        repo,
        model,
        dest,
        tag=tag,
        digest=digest,
        references=references,
        repo_roots=repo_roots,
        include=include,
        exclude=exclude,
        delete=delete,
        progress=progress,
        cache_root=cache.root if cache is not None else None,
    )
    make_dirs(request.dest)
    dest = request.dest.absolute()
    with locked_dest(dest):
        facts = prepare_dest(dest, request.paths)
        index = EMPTY if verify_existing else load_index(dest)
        plan = plan_pull(repo, request.ref, dest, facts, index=index, **request.plan_args)
        result = execute(plan, repo, jobs=jobs, cache=cache, progress=progress)
    result.elapsed = time.monotonic() - started
    return result


def _check_space(plan: PullPlan) -> None:
    if plan.space_needed > plan.space_available:
        import humanize

        raise StorageError(
            f"not enough space in {display_path(plan.dest)}: the pull needs "
            f"{humanize.naturalsize(plan.space_needed, binary=True)}, "
            f"{humanize.naturalsize(plan.space_available, binary=True)} is available",
            "free some space or pull elsewhere",
        )


def execute(
    plan: PullPlan,
    repo: Repository,
    *,
    jobs: int = DEFAULT_JOBS,
    cache: ChunkCache | None = None,
    progress: Progress | None = None,
) -> PullResult:
    """Carry out a plan made (without dry_run) under DEST's lock, still held."""
    work = plan.work
    if work is None:
        raise UsageError(
            "a dry run's plan was made without DEST's lock and cannot be carried out", "pull without --dry-run"
        )
    progress = progress or NullProgress()
    dest = Path(plan.dest)
    result = PullResult(
        plan.model,
        plan.tag,
        plan.digest,
        len(plan.files),
        plan.total_size,
        kept_files=work.kept_files,
        newest=plan.newest,
    )
    for final, mode in work.modes:
        set_mode(final, mode)
    _check_space(plan)
    local: list[ChunkSource] = [*work.local_sources, *([CacheSource(cache)] if cache is not None else [])]
    chain = SourceChain(
        [*local, RepositorySource(repo, f"{plan.model}:{plan.tag}", local=local, delta_bases=plan.delta_bases)]
    )
    assembler = _Assembler(f"{plan.model}:{plan.tag}", chain, progress)
    if plan.space_needed:
        progress.start("pull", plan.space_needed)
    try:
        assembler.run(work.files, jobs)
    except BaseException:
        progress.close()
        try:  # the files that did complete and verify get their final names all the same
            commit_files(dest, assembler.verified)
        except Exception:
            pass  # they stay in the partial directory; the rerun finds them
        raise
    progress.close()
    placed = commit_files(dest, assembler.verified)
    for leftover in work.leftovers:
        leftover.unlink(missing_ok=True)
    if plan.delete:
        result.deleted = delete_files(dest, plan.delete)
    _write_index(dest, plan, zip(assembler.verified, placed, strict=True))
    _account(result, plan, chain)
    return result


def _write_index(dest: Path, plan: PullPlan, placed: Iterable[tuple[FilePlan, os.stat_result]]) -> None:
    """Record in DEST's index (dest_index.py) every file of the version now complete in DEST,
    by its stat now: the files just renamed into place, and the files found complete if their
    stat is still the one their check began with (a file changed meanwhile is left out). The
    entries of other paths that still match are carried over."""
    work = plan.work
    assert work is not None  # a plan made under DEST's lock
    entries, paths = [], set()
    for p, st in placed:
        entries.append(entry_of(p.entry.path, st, p.entry))
        paths.add(p.entry.path)
    for entry, final, before, mode_set in work.complete:
        try:
            st = os.lstat(final)
        except OSError:
            continue
        same = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev) == (
            before.st_size,
            before.st_mtime_ns,
            before.st_ino,
            before.st_dev,
        )
        if same and (mode_set or st.st_ctime_ns == before.st_ctime_ns):  # our chmod changed its ctime
            entries.append(entry_of(entry.path, st, entry))
            paths.add(entry.path)
    write_index(dest, entries + carried_over(work.index, dest, paths | set(plan.delete)))


def _account(result: PullResult, plan: PullPlan, chain: SourceChain) -> None:
    """What came from where: kept files and chunks already in partial files count as reused."""
    work = plan.work
    assert work is not None  # a plan made under DEST's lock, not a dry run's
    result.reused_bytes = (
        work.kept_bytes
        + sum(p.bytes_present() for p in work.files)
        + chain.bytes.get("dest", 0)
        + chain.bytes.get("reference", 0)
    )
    result.cached_bytes = chain.bytes.get("cache", 0)
    result.fetched_raw_bytes = chain.bytes["repository"]
    result.fetched_chunks = chain.chunks["repository"]
    repository = chain.sources[-1]
    assert isinstance(repository, RepositorySource)  # the last source, always
    result.fetched_bytes = repository.stored_bytes
    result.delta_chunks = repository.delta_chunks


class _Assembler:
    """Puts each missing chunk in place from the cheapest verified source, and verifies each file
    once its last chunk is written. One task per missing chunk of a file of several chunks, one
    task per batch of files of at most one chunk, on ``jobs`` threads: at most ``jobs`` chunks
    are in memory at once. The chain counts what came from where."""

    def __init__(self, version: str, sources: SourceChain, progress):
        self.version = version  # "model:tag", for messages
        self.sources = sources
        self.progress = progress
        self.verified: list[FilePlan] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._replaced: set[str] = set()

    def run(self, plans: list[FilePlan], jobs: int) -> None:
        # The main thread only submits: its syscalls would contend for the GIL with the workers'.
        pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix="aim-fetch")
        # Earlier files of DEST this pull renames over: their pages are dropped as they are copied.
        self._replaced = {plan.final for plan in plans}
        try:
            # Small files first: each batch completes files as it goes, so a pull cut off later
            # leaves them verified, to get their final names all the same.
            small = [p for p in plans if p.one_chunk]
            futures = [
                pool.submit(self.fill_small, batch) for batch in batches(small, lambda p: p.entry.size, workers=jobs)
            ]
            work = []
            for plan in plans:
                if plan.one_chunk:
                    continue
                missing = plan.missing()
                if not missing:
                    futures.append(pool.submit(self.finalize, plan))
                    continue
                plan.remaining = len(missing)
                plan.lock = threading.Lock()
                plan.copied = set()
                plan.digest = InOrderDigest(
                    plan.partial, plan.offsets, [size for _, size in plan.entry.chunks], plan.have
                )
                work.append((plan, *plan_copies(plan.entry.chunks, plan.offsets, missing, self.sources.locate)))
            # Copies shared out by bytes over the workers that can run at once (copy_runs.py).
            copied = sum(run.size for _, runs, _ in work for run in runs)
            share = max(MAX_RUN, copied // max(1, min(jobs, os.cpu_count() or 1)))
            for plan, runs, fetch in work:
                futures.extend(pool.submit(self.copy_segment, plan, segment) for segment in segments(runs, share))
                futures.extend(pool.submit(self.fill, plan, i) for i in fetch)
            wait(futures, return_when=FIRST_EXCEPTION)
            for fut in futures:
                if fut.done():
                    fut.result()  # the first failure, before waiting for the rest
            for fut in futures:
                fut.result()
        except BaseException:
            self._stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()

    def fill(self, plan: FilePlan, index: int) -> None:
        """Put one chunk in place (copied from a local file, else read from the first source
        that has it, verified), then finalize the file if it was its last."""
        if self._stop.is_set():
            return
        digest, size = plan.entry.chunks[index]
        offset = plan.offsets[index]
        data = None
        where = self.sources.locate(digest)
        if where is None or not copy_at(plan.partial, offset, where[1], where[2], size):
            data = self.sources.read(digest, size, plan.entry.path)
            write_at(plan.partial, offset, data)
        else:
            self._copied(plan, CopyRun(where[0], where[1], where[2], offset, size, [index]))
        self._landed(plan, [index], data)

    def copy_segment(self, plan: FilePlan, segment: list[CopyRun]) -> None:
        """Copy runs of ``plan`` from local files, unread: no copy of them through this process,
        no hashing of their own; the whole-file digest checks them (``finalize``). A run that
        cannot be copied is put in place chunk by chunk (``fill``)."""
        for run in segment:
            if self._stop.is_set():
                return
            drop = run.source_name == "dest" and run.source in self._replaced
            if not copy_at(plan.partial, run.offset, run.source, run.source_offset, run.size, drop_source=drop):
                for index in run.indexes:
                    self.fill(plan, index)
                continue
            self._copied(plan, run)
            self._landed(plan, run.indexes, None)

    def _copied(self, plan: FilePlan, run: CopyRun) -> None:
        for index in run.indexes:
            self.sources.count(run.source_name, plan.entry.chunks[index][1])
        assert plan.lock is not None and plan.copied is not None
        with plan.lock:
            plan.copied.update(run.indexes)

    def _landed(self, plan: FilePlan, indexes: list[int], data) -> None:
        """Chunks ``indexes`` are in the partial file (``data``: their bytes, for one chunk
        written from memory): hash them into the file's digest, count them, and finalize the file
        if they were its last."""
        assert plan.lock is not None and plan.digest is not None  # several chunks
        try:
            for index in indexes:
                plan.digest.written(index, data)
        except OSError as e:
            raise dest_error(e, plan.partial) from None
        self.progress.advance(sum(plan.entry.chunks[index][1] for index in indexes))
        with plan.lock:
            plan.remaining -= len(indexes)
            last = plan.remaining == 0
        if last:
            self.finalize(plan)

    def fill_small(self, batch: list[FilePlan]) -> None:
        """Assemble files of at most one chunk, one after the other in this task. Such a file's
        bytes are its chunk's, so its whole-file digest is the chunk digest, verified on the
        bytes in memory before they are written: each partial is written whole (one open, one
        write, one close) and never re-read. No writeback is started per file: the syncfs
        before the renames writes them all at once."""
        written = 0
        try:
            for plan in batch:
                if self._stop.is_set():
                    return
                written += self._assemble_one_chunk(plan)
                with self._lock:
                    self.verified.append(plan)
        finally:
            self.progress.advance(written)

    def _assemble_one_chunk(self, plan: FilePlan) -> int:
        """Bytes fetched (or taken from a local source) to write the file of ``plan``."""
        entry = plan.entry
        digest, size = entry.chunks[0] if entry.chunks else (EMPTY_DIGEST, 0)
        if digest != entry.blake3:  # no bytes could match both: fetch nothing
            content = "its only chunk" if entry.chunks else "an empty file"
            raise IntegrityError(
                f"manifest {self.version} is inconsistent: the digest of {entry.path} is not the digest of {content}",
                "the version is corrupt or was not written by aim_cli; run `aim_cli repo check`",
            )
        if plan.have:  # already right at offset 0 of the partial (checked in plan_pull), which may hold more
            truncate_partial(plan)
            return 0
        data = self.sources.read(digest, size, entry.path) if size else b""  # verified against ``digest``
        write_at(plan.partial, 0, data, whole=True)
        return size

    def finalize(self, plan: FilePlan) -> None:
        """Check the assembled file against its whole-file digest (hashed as its chunks were
        written, the rest read from the file); the rename comes at the end. Chunks copied in
        unread are the only bytes not verified on their own: if the digest does not match, they
        are put in place again, read and verified, and the file is hashed again."""
        truncate_partial(plan)
        try:
            digest = plan.digest.hexdigest() if plan.digest is not None else file_hexdigest(plan.partial)
            if digest != plan.entry.blake3 and plan.copied:
                log.warning("%s: chunks copied from local files were not as indexed; reading them", plan.entry.path)
                for i in sorted(plan.copied):
                    chunk, size = plan.entry.chunks[i]
                    write_at(plan.partial, plan.offsets[i], self.sources.read(chunk, size, plan.entry.path))
                digest = file_hexdigest(plan.partial)
        except OSError as e:
            raise dest_error(e, plan.partial) from None
        if digest != plan.entry.blake3:
            raise IntegrityError(
                f"{plan.entry.path} does not match its digest after assembly",
                "the destination disk may be failing; rerun the pull",
            )
        # Verified: start the writeback of what is left of it (chunks written from memory started
        # theirs as they were written, dest_writer.write_at), so the final syncfs waits for little.
        fd = open_regular(plan.partial, os.O_RDONLY)
        try:
            start_writeback(fd)
        finally:
            os.close(fd)
        with self._lock:
            self.verified.append(plan)
