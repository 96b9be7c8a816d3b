"""The pull pipeline: resolve once, plan from what is on disk, fetch the rest in parallel, rename
each file into place only once its whole-file digest matches, then give it its mode.

Layout inside DEST while a pull runs (names starting with ``.aim`` never appear in a manifest):

    DEST/.aim/pull.lock                   one pull at a time (aim_cli/dest_lock.py says how)
    DEST/.aim/partial/<id>                a file being assembled; id = BLAKE3(path NUL file digest)[:32]
    DEST/.aim/case-probe                  for an instant: does DEST's filesystem ignore case?

The partial names are deterministic, so a rerun after a kill finds them and re-hashes their chunks
against the manifest (which knows each chunk's offset, size and digest): only what is still
missing is fetched, and no second copy of the model is made. A partial file is always the
owner's, mode 0600: the manifest's mode is applied only after the rename, so a read-only or
write-only file can be re-read for verification and rewritten by a rerun.

Three stages: ``_plan`` reads DEST (what is complete, what each partial holds, which local files
can provide chunks), ``_Assembler`` fetches each missing chunk from the cheapest verified source
(the partial itself, the file already at the final path, ``--reference`` directories, the chunk
cache, then the repository), and ``_commit_files`` gives the verified files their final names.
Every chunk's BLAKE3 is checked before it is written; a local source that does not match is skipped.
Files of at most one chunk (most files of a model but its weights) go in batches, one task each,
at every stage: DEST is read with one listdir per directory, not an lstat per file; such a file is
written whole in one open/write/close, verified from its bytes in memory (its digest is its only
chunk's), and renamed after the one syncfs like every other file.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import blake3

from aim_cli import manifest as mf
from aim_cli.chunking import batches, file_digest, hash_bytes
from aim_cli.config import check_name
from aim_cli.dest_lock import DestLock
from aim_cli.errors import IntegrityError, StorageError, UsageError
from aim_cli.fsutil import directory_argument, display_path, fsync_dir, start_writeback, sync_filesystem
from aim_cli.progress import NullProgress
from aim_cli.store import REPO_META_KEY, Repository, VersionRef

WORK_DIR = ".aim"
PARTIAL_DIR = "partial"
CASE_PROBE = "case-probe"
PARTIAL_MODE = 0o600  # what a partial file always has: readable and writable by its owner only
# Opening a file of DEST: never through a symlink, never blocking on a FIFO planted there.
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK
EMPTY_DIGEST = hash_bytes(b"")  # the whole-file digest of an empty file, which has no chunks


@dataclass
class PullResult:
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


def resolve_version(repo: Repository, model: str, tag: str | None, digest: str | None) -> tuple[VersionRef, bool]:
    """The version to pull, resolved once. Without a tag: the newest by created_at, chosen by the
    versions' summaries, so one manifest is read, not all (``Repository.newest_version``)."""
    check_name("model", model)
    if digest is not None and not mf.HEX64.fullmatch(digest.lower()):
        raise UsageError("--digest takes the full 64-hex-character manifest digest",
                         "copy it from the push output or `aim_cli model versions`")
    if tag is None:
        ref, newest = repo.newest_version(model), True
    else:
        ref, newest = repo.get_version(model, tag), False
    if digest is not None and ref.digest != digest.lower():
        raise IntegrityError(
            f"version {ref.manifest.tag!r} of model {model!r} has digest {ref.digest}, not the pinned {digest.lower()}",
            "the version is not the one you pinned; nothing was downloaded",
        )
    return ref, newest


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


# -- the destination -------------------------------------------------------------------------------
def _is_repository(directory: Path) -> bool:
    return os.path.lexists(directory / REPO_META_KEY)


def refuse_repository_dest(dest: Path, repo_roots: Iterable[str | os.PathLike] = ()) -> None:
    """Pull never writes into a repository (DESIGN.md section 4): DEST may not be a repository's
    directory, lie inside one or contain one (UsageError, exit 2).

    Inside: every parent of the resolved DEST is looked at (one stat each). Containing: walking
    DEST's whole tree could take minutes in a big directory, so the check is bounded to the places
    that matter: DEST's immediate subdirectories, the local repositories ``repo_roots`` (those of
    the config, wherever they lie), and every existing directory the version writes into (checked
    by ``_DestDirs`` as the files are planned and placed). A repository deeper in DEST that the
    config does not name stays out of reach of this pull: it writes nowhere near it."""
    def refuse(relation: str, root: str | os.PathLike) -> UsageError:
        return UsageError(f"destination {display_path(dest)} {relation} the repository at {display_path(root)}",
                          "pull into a directory outside every repository")

    resolved = dest.resolve()
    for directory in (resolved, *resolved.parents):
        if _is_repository(directory):
            raise refuse("is" if directory == resolved else "lies inside", directory)
    for root in (Path(r).resolve() for r in repo_roots):  # they need not hold an aim-repo.json yet
        if root == resolved or root in resolved.parents:
            raise refuse("is" if root == resolved else "lies inside", root)
        if resolved in root.parents:
            raise refuse("contains", root)
    try:
        children = [e.path for e in os.scandir(resolved) if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        raise _dest_error(e, resolved) from None
    for child in children:
        if _is_repository(Path(child)):
            raise refuse("contains", child)


def _make_dirs(path: Path) -> None:
    """``mkdir -p`` one level at a time: Path.mkdir(parents=True) recurses once per missing level,
    and a deep DEST would end in RecursionError."""
    missing = []
    current = path.absolute()
    while not os.path.lexists(current):
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            pass
        except OSError as e:
            raise _dest_error(e, directory) from None


class _DestDirs:
    """The directories of DEST that files go into, each checked once per instance: never a
    symlink (pull never writes through one), never a file in the way, never a repository's
    directory. Missing ones are created one level at a time when asked (no recursion)."""

    def __init__(self, dest: Path):
        self.dest = dest
        self._checked: set[Path] = set()
        self._absent: set[Path] = set()  # found missing when not asked to create (DEST is locked)

    def parent_of(self, rel: str, *, create: bool) -> Path:
        parts = rel.split("/")[:-1]
        parent = self.dest
        for part in parts:
            parent = parent / part
            if parent in self._checked:
                continue
            if (not create and parent in self._absent) or not self._check(parent, create):
                self._absent.add(parent)
                return self.dest.joinpath(*parts)  # absent: nothing below it exists either
            self._checked.add(parent)
        return parent

    @staticmethod
    def _check(directory: Path, create: bool) -> bool:
        try:
            st = os.lstat(directory)
        except FileNotFoundError:
            if not create:
                return False
            try:
                os.mkdir(directory)
            except FileExistsError:
                pass  # created meanwhile: checked below like any other
            except OSError as e:
                raise _dest_error(e, directory) from None
            st = os.lstat(directory)
        except OSError as e:
            raise _dest_error(e, directory) from None
        if stat.S_ISLNK(st.st_mode):
            raise UsageError(f"{display_path(directory)} is a symlink; pull never writes through a symlink in its "
                             f"destination", "remove the link or pull into another directory")
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{display_path(directory)} exists and is not a directory", "move it away or pull elsewhere")
        if _is_repository(directory):
            raise UsageError(f"{display_path(directory)} is a repository's directory; pull never writes into one",
                             "pull into a directory outside every repository")
        return True


def _open_regular(path: str | Path, flags: int) -> int:
    """An open descriptor of the regular file at ``path`` (created PARTIAL_MODE with O_CREAT):
    never through a symlink, never a FIFO or device (which could block or be endless)."""
    fd = os.open(path, flags | _OPEN_FLAGS, PARTIAL_MODE)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


def _dest_error(e: OSError, path: str | Path) -> Exception:
    if e.errno == errno.ELOOP:
        return UsageError(f"{display_path(path)} is a symlink; pull never writes through one", "remove it and rerun")
    if e.errno == errno.ENAMETOOLONG:
        return UsageError(f"{display_path(path)}: {e.strerror}", "pull into a directory with a shorter path")
    if e.errno == errno.ENOSPC:
        return StorageError(f"disk full while writing {display_path(path)}", "free some space and rerun: the pull resumes")
    return StorageError(f"cannot write {display_path(path)}: {e.strerror}", "check the destination's permissions")


def _fold(path: str) -> str:
    """``path`` as a filesystem that ignores case compares it (case, and Unicode normalisation,
    which such filesystems ignore too)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", path).casefold())


def case_clashes(paths: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of manifest paths that name one file (or a file and a directory) on a filesystem
    that ignores case: ``A.bin`` and ``a.bin``; ``A`` and ``a/x``."""
    seen: dict[str, str] = {}
    clashes = []
    for path in paths:
        key = _fold(path)
        if key in seen:
            clashes.append((seen[key], path))
        else:
            seen[key] = path
    # a file whose folded path is a folded directory of another file
    folded_dirs: dict[str, str] = {}
    for key, path in seen.items():
        parts = key.split("/")
        for i in range(1, len(parts)):
            folded_dirs.setdefault("/".join(parts[:i]), path)
    for key, path in seen.items():
        if key in folded_dirs:
            clashes.append((path, folded_dirs[key]))
    return clashes


def check_case_clashes(paths: Sequence[str], ignores_case: Callable[[], bool]) -> None:
    """Refuse (UsageError) a version whose paths collide on DEST's case-insensitive filesystem:
    one file would overwrite the other. A case-sensitive DEST takes any version. ``ignores_case``
    probes DEST, only when the version has such a pair."""
    clashes = case_clashes(paths)
    if clashes and ignores_case():
        a, b = clashes[0]
        more = f" (and {len(clashes) - 1} more pairs)" if len(clashes) > 1 else ""
        raise UsageError(
            f"the version has paths that differ only by case, {display_path(a)!r} and {display_path(b)!r}{more}, "
            f"and the destination's filesystem ignores case",
            "pull onto a case-sensitive filesystem (most Linux filesystems are)")


def _ignores_case(work_dir: Path) -> bool:
    """Whether the filesystem of ``work_dir`` ignores case: create a file, look for its upper-case
    name. (ext4 can fold case per directory; pull's own work directory stands for DEST.)"""
    probe = work_dir / CASE_PROBE
    try:
        probe.unlink(missing_ok=True)  # left by a killed pull: the lock says this DEST is ours
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PARTIAL_MODE))
        try:
            return os.path.lexists(work_dir / CASE_PROBE.upper())
        finally:
            probe.unlink()
    except OSError as e:
        raise _dest_error(e, probe) from None


# -- planning --------------------------------------------------------------------------------------
def _partial_name(entry: mf.FileEntry) -> str:
    return blake3.blake3(f"{entry.path}\0{entry.blake3}".encode()).hexdigest()[:32]


def _offsets(entry: mf.FileEntry) -> list[int]:
    out, pos = [], 0
    for _, size in entry.chunks:
        out.append(pos)
        pos += size
    return out


@dataclass(slots=True)  # slots, and no lock or set until needed: a pull of 100,000 files holds as many
class _FilePlan:
    entry: mf.FileEntry
    final: str  # paths as str: a Path object costs four times the memory
    partial: str
    offsets: list[int]
    have: AbstractSet[int] = frozenset()  # indexes of chunks already right in the partial
    remaining: int = 0  # chunks still to write (counted down by the assembler's threads)
    lock: threading.Lock | None = None  # guards ``remaining`` (files of several chunks only)

    @property
    def one_chunk(self) -> bool:
        """At most one chunk: assembled in one write, in a batch of such files (_Assembler)."""
        return len(self.entry.chunks) <= 1

    def missing(self) -> list[int]:
        return [i for i in range(len(self.entry.chunks)) if i not in self.have]

    def bytes_present(self) -> int:
        return sum(self.entry.chunks[i][1] for i in self.have)


@dataclass
class _Plan:
    """What the pull has to do, read from DEST: the files to assemble (each with the chunks its
    partial already holds), the files already complete, and where else chunks can be found."""
    files: list[_FilePlan]
    kept_files: int
    kept_bytes: int
    sources: "_LocalSources"
    leftovers: list[Path]  # partial files of another version's pull: removed at the end

    @property
    def needed(self) -> int:
        return sum(p.entry.size - p.bytes_present() for p in self.files)


def _scan_partials(partial_dir: Path) -> list[Path]:
    """The partial files left in DEST/.aim/partial. Anything there that aim_cli does not write
    (a directory, a symlink, a FIFO, a second hard link to some file) is refused rather than
    followed or deleted. A partial an older aim_cli left read-only (it applied the file's mode
    before the rename) is made the owner's again, so the rerun can re-read and finish it."""
    found = []
    try:
        entries = list(os.scandir(partial_dir))
    except OSError as e:
        raise _dest_error(e, partial_dir) from None
    for entry in entries:
        path = Path(entry.path)
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise UsageError(f"{display_path(path)} is not a partial file of aim_cli (a directory, a link or a "
                             f"special file)", "remove it and rerun the pull")
        if stat.S_IMODE(st.st_mode) != PARTIAL_MODE:
            try:
                os.chmod(path, PARTIAL_MODE)  # a regular file, just checked, in the directory we hold the lock of
            except OSError as e:
                raise _dest_error(e, path) from None
        found.append(path)
    return found


def _chunks_in_place(path: str | Path, entry: mf.FileEntry, offsets: list[int], advance=None) -> set[int]:
    """Indexes of the chunks of ``entry`` whose bytes are already right at their offsets in
    ``path`` (a partial file, or an earlier file at the final path). One sequential read."""
    present: set[int] = set()
    try:
        fd = _open_regular(path, os.O_RDONLY)
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


def _set_mode(path: str | Path, mode: int) -> None:
    try:
        fd = _open_regular(path, os.O_RDONLY)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    except OSError as e:
        raise _dest_error(e, path) from None


class _LocalSources:
    """Chunks found in local files (an earlier version at the final path, --reference dirs,
    partial files of another version's pull), indexed by digest. Files are re-chunked as the
    repository cuts them (its RepoFormat: content-defined, tensor-aligned in format 2, so
    unchanged data cuts the same chunks even when it moved); chunks already verified in place are
    added as they are."""

    def __init__(self, fmt):
        self.fmt = fmt
        self.index: dict[str, tuple[str, int, int]] = {}
        self.lock = threading.Lock()

    def add(self, path: str | Path, chunks) -> None:
        with self.lock:
            for digest, offset, size in chunks:
                self.index.setdefault(digest, (str(path), offset, size))

    def add_file(self, path: str | Path) -> None:
        if not _regular_file(path):
            return
        try:
            self.add(path, [(c.digest, c.offset, c.size) for c in self.fmt.chunk_file(path)])
        except OSError:
            pass

    def read(self, digest: str, size: int) -> bytes | None:
        """The chunk's ``size`` bytes, verified, or None (not indexed, or changed since)."""
        where = self.index.get(digest)
        if where is None:
            return None
        path, offset, _ = where
        try:
            fd = _open_regular(Path(path), os.O_RDONLY)
            try:
                data = os.pread(fd, size, offset)
            finally:
                os.close(fd)
        except OSError:
            return None
        if len(data) != size or blake3.blake3(data).hexdigest() != digest:
            return None  # changed since it was indexed: fetch instead
        return data


def _regular_file(path: str | Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class _Target:
    """A file of the version, where it goes, and what the one pass over DEST saw of it."""
    entry: mf.FileEntry
    final: str
    partial: str
    final_listed: bool  # a name is (or may be) at the final path, of any type
    partial_listed: bool  # a partial file of this file's is in the partial directory


class _DestNames:
    """The names in each directory of DEST that the version writes into, read once: one listdir
    per directory instead of an lstat per file (most of which, in a fresh pull, find nothing).
    DEST is locked, so no other pull adds a name meanwhile. Names are compared folded, so that
    a filesystem that ignores case or normalises Unicode (it would find "a.bin" for "A.bin")
    still has its file looked at; a folded match that is not the file costs one lstat."""

    def __init__(self):
        self._names: dict[Path, frozenset[str]] = {}

    def may_have(self, directory: Path, name: str) -> bool:
        names = self._names.get(directory)
        if names is None:
            try:
                names = frozenset(_fold(n) for n in os.listdir(directory))
            except (FileNotFoundError, NotADirectoryError):
                names = frozenset()
            except OSError as e:
                raise _dest_error(e, directory) from None
            self._names[directory] = names
        return _fold(name) in names


def _plan_file(target: _Target, sources: _LocalSources, references, advance) -> _FilePlan | None:
    """What DEST holds of one file: None if the file at the final path is complete (the right
    size, and every chunk right at its offset: a file of another size is never complete, even
    one with no chunks), else its plan, with the chunks its partial file already holds. The
    final file and the references are indexed as sources of the chunks still missing."""
    entry, final, partial = target.entry, target.final, target.partial
    plan = _FilePlan(entry, final, partial, _offsets(entry))
    st = None
    if target.final_listed:
        try:
            st = os.lstat(final)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _dest_error(e, final) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{display_path(final)} is a directory, the version has a file there",
                         "move it away or pull elsewhere")
    if st is not None and stat.S_ISREG(st.st_mode):
        same_size = st.st_size == entry.size
        in_place = _chunks_in_place(final, entry, plan.offsets, advance) if same_size else set()
        if same_size and len(in_place) == len(entry.chunks):  # every byte verified chunk by chunk
            if stat.S_IMODE(st.st_mode) == entry.mode:
                return None
            if st.st_nlink == 1:  # a file with other names is replaced, not chmodded under them all
                _set_mode(final, entry.mode)
                return None
        sources.add(final, [(entry.chunks[i][0], plan.offsets[i], entry.chunks[i][1]) for i in in_place])
        if len(in_place) * 2 < len(entry.chunks):  # changed beyond in-place edits: look for moved data
            sources.add_file(final)
    if target.partial_listed:  # a regular file of ours (_scan_partials); reopened without following links
        plan.have = _chunks_in_place(partial, entry, plan.offsets, advance)
    if len(plan.have) < len(entry.chunks):
        for ref_dir in references:
            sources.add_file(Path(ref_dir) / entry.path)
    return plan


def _plan(repo, m: mf.Manifest, dest: Path, references, progress) -> _Plan:
    """Read DEST (never writing to it, bar partial files' and complete files' modes): which files
    are complete, what each partial file holds, which local files can provide chunks. Files are
    hashed and re-chunked in parallel threads (blake3 and pyfastcdc release the GIL)."""
    partial_dir = dest / WORK_DIR / PARTIAL_DIR
    _make_work_dir(partial_dir)
    dirs = _DestDirs(dest)
    parents = [dirs.parent_of(e.path, create=False) for e in m.files]  # one Path per directory, shared
    check_case_clashes([e.path for e in m.files], lambda: _ignores_case(dest / WORK_DIR))
    partials = {p.name: p for p in _scan_partials(partial_dir)}
    names = _DestNames()
    targets = []
    current = set()
    for e, parent in zip(m.files, parents):
        name, partial_name = e.path.rsplit("/", 1)[-1], _partial_name(e)
        targets.append(_Target(e, os.path.join(parent, name), os.path.join(partial_dir, partial_name),
                               names.may_have(parent, name), partial_name in partials))
        current.add(partial_name)
    leftovers = [p for name, p in partials.items() if name not in current]
    sources = _LocalSources(repo.format())

    # Checking a large model already on disk takes a while: it gets a bar of its own.
    on_disk = sum(t.entry.size for t in targets if t.final_listed or t.partial_listed)
    if on_disk:
        progress.start("check", on_disk)

    def plan_batch(batch: list[_Target]) -> list[_FilePlan | None]:
        return [_plan_file(t, sources, references, progress.advance) for t in batch]

    # In batches (a big file alone in its own): a task per small file would cost more than its plan.
    threads = os.cpu_count() or 2
    work = list(batches(targets, lambda t: t.entry.size, workers=threads))
    with ThreadPoolExecutor(max(1, min(threads, len(work) + len(leftovers))),
                            thread_name_prefix="aim-plan") as planners:
        for leftover in leftovers:
            planners.submit(sources.add_file, leftover)
        plans = [plan for batch in planners.map(plan_batch, work) for plan in batch]
    progress.close()
    kept = [t.entry for t, plan in zip(targets, plans) if plan is None]
    return _Plan([p for p in plans if p is not None], len(kept), sum(e.size for e in kept), sources, leftovers)


def _check_space(dest: Path, needed: int) -> None:
    free = shutil.disk_usage(dest).free
    if needed > free:
        import humanize

        raise StorageError(
            f"not enough space in {display_path(dest)}: the pull needs {humanize.naturalsize(needed, binary=True)}, "
            f"{humanize.naturalsize(free, binary=True)} is available",
            "free some space or pull elsewhere",
        )


# -- the pull ----------------------------------------------------------------------------------------
def pull(repo: Repository, model: str, dest: str | os.PathLike, *, tag: str | None = None,
         digest: str | None = None, jobs: int = 8, references: Sequence[str | os.PathLike] = (),
         cache=None, progress=None, repo_roots: Iterable[str | os.PathLike] = ()) -> PullResult:
    """Pull a version into ``dest``. ``repo_roots``: the local repositories DEST must stay out of
    (the config's), besides any directory holding an aim-repo.json (see refuse_repository_dest)."""
    started = time.monotonic()
    progress = progress or NullProgress()
    dest = directory_argument(dest, "the destination")
    references = [directory_argument(r, "--reference") for r in references]
    ref, newest = resolve_version(repo, model, tag, digest)
    repo.format()  # a format this client cannot read is refused before DEST is touched
    m = ref.manifest
    result = PullResult(model, m.tag, ref.digest, len(m.files), m.total_size, newest=newest)

    if dest.exists() and not dest.is_dir():
        raise UsageError(f"destination {display_path(dest)} exists and is not a directory", "choose another DEST")
    for ref_dir in references:
        if not ref_dir.is_dir():
            raise UsageError(f"--reference {display_path(ref_dir)} is not a directory", "check the path")
    refuse_repository_dest(dest, repo_roots)
    _make_dirs(dest)
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
    plan = _plan(repo, m, dest, references, progress)
    result.kept_files += plan.kept_files
    result.reused_bytes += plan.kept_bytes + sum(p.bytes_present() for p in plan.files)
    _check_space(dest, plan.needed)
    assembler = _Assembler(repo, m, plan.sources, cache, result, progress)
    if plan.needed:
        progress.start("pull", plan.needed)
    try:
        assembler.run(plan.files, jobs)
    except BaseException:
        progress.close()
        try:  # the files that did complete and verify get their final names all the same
            _commit_files(dest, assembler.verified)
        except Exception:
            pass  # they stay in the partial directory; the rerun finds them
        raise
    progress.close()
    _commit_files(dest, assembler.verified)
    for leftover in plan.leftovers:
        leftover.unlink(missing_ok=True)


class _Assembler:
    """Puts each missing chunk in place from the cheapest verified source, and verifies each file
    once its last chunk is written. One task per missing chunk of a file of several chunks, one
    task per batch of files of at most one chunk, on ``jobs`` threads: at most ``jobs`` chunks
    are in memory at once. Counts what came from where into the result."""

    def __init__(self, repo, m: mf.Manifest, sources: _LocalSources, cache, result: PullResult, progress):
        self.repo = repo
        self.m = m
        self.sources = sources
        self.cache = cache
        self.result = result
        self.progress = progress
        self.verified: list[_FilePlan] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def run(self, plans: list[_FilePlan], jobs: int) -> None:
        # The main thread only submits: its syscalls would contend for the GIL with the workers'.
        pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix="aim-fetch")
        try:
            # Small files first: each batch completes files as it goes, so a pull cut off later
            # leaves them verified, to get their final names all the same.
            small = [p for p in plans if p.one_chunk]
            futures = [pool.submit(self.fill_small, batch)
                       for batch in batches(small, lambda p: p.entry.size, workers=jobs)]
            for plan in plans:
                if plan.one_chunk:
                    continue
                missing = plan.missing()
                if not missing:
                    futures.append(pool.submit(self.finalize, plan))
                    continue
                plan.remaining = len(missing)
                plan.lock = threading.Lock()
                futures.extend(pool.submit(self.fill, plan, i) for i in missing)
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

    def _chunk(self, digest: str, size: int, path: str) -> bytes:
        data = self.sources.read(digest, size)
        if data is not None:
            self._count(reused=size)
            return data
        if self.cache is not None and (data := self.cache.get(digest, size)) is not None:
            self._count(cached=size)
            return data
        data, stored = self.repo.fetch_blob(digest, size, context=f"{self.m.model}:{self.m.tag}/{path}")
        self._count(fetched=stored, fetched_raw=size)
        if self.cache is not None:
            self.cache.put(digest, data)
        return data

    def _count(self, *, reused: int = 0, cached: int = 0, fetched: int = 0, fetched_raw: int = 0) -> None:
        with self._lock:
            self.result.reused_bytes += reused
            self.result.cached_bytes += cached
            if fetched_raw:
                self.result.fetched_bytes += fetched
                self.result.fetched_raw_bytes += fetched_raw
                self.result.fetched_chunks += 1

    def fill(self, plan: _FilePlan, index: int) -> None:
        """Put one chunk in place, then finalize the file if it was its last."""
        if self._stop.is_set():
            return
        digest, size = plan.entry.chunks[index]
        _write_at(plan.partial, plan.offsets[index], self._chunk(digest, size, plan.entry.path))
        self.progress.advance(size)
        with plan.lock:
            plan.remaining -= 1
            last = plan.remaining == 0
        if last:
            self.finalize(plan)

    def fill_small(self, batch: list[_FilePlan]) -> None:
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

    def _assemble_one_chunk(self, plan: _FilePlan) -> int:
        """Bytes fetched (or taken from a local source) to write the file of ``plan``."""
        entry = plan.entry
        digest, size = entry.chunks[0] if entry.chunks else (EMPTY_DIGEST, 0)
        if digest != entry.blake3:  # no bytes could match both: fetch nothing
            content = "its only chunk" if entry.chunks else "an empty file"
            raise IntegrityError(
                f"manifest {self.m.model}:{self.m.tag} is inconsistent: the digest of {entry.path} is not "
                f"the digest of {content}",
                "the version is corrupt or was not written by aim_cli; run `aim_cli repo check`",
            )
        if plan.have:  # already right at offset 0 of the partial (checked in _plan), which may hold more
            _truncate_partial(plan)
            return 0
        data = self._chunk(digest, size, entry.path) if size else b""  # verified against ``digest``
        _write_at(plan.partial, 0, data, whole=True)
        return size

    def finalize(self, plan: _FilePlan) -> None:
        """Check the assembled file against its whole-file digest; the rename comes at the end."""
        _truncate_partial(plan)
        if file_digest(plan.partial) != plan.entry.blake3:
            raise IntegrityError(
                f"{plan.entry.path} does not match its digest after assembly",
                "the destination disk may be failing; rerun the pull",
            )
        # Verified (the re-read came from the page cache): start its writeback now, so the disk
        # writes it while other files are fetched and the final syncfs waits only for the rest.
        fd = _open_regular(plan.partial, os.O_RDONLY)
        try:
            start_writeback(fd)
        finally:
            os.close(fd)
        with self._lock:
            self.verified.append(plan)


def _commit_files(dest: Path, verified: list[_FilePlan]) -> None:
    """Give verified files their final names, then their modes. Their bytes are made durable
    first, all at once (one syncfs, where an fsync per file costs seconds for a model of thousands
    of small files), so that after a power loss no final name holds a file whose data did not
    reach the disk. The mode comes after the rename: a partial file stays the owner's (readable
    and writable), so a read-only file verified before a kill does not wedge the rerun."""
    if not verified:
        return
    try:
        sync_filesystem(dest)
    except OSError as e:
        raise _dest_error(e, dest) from None
    dirs = _DestDirs(dest)
    parents = set()
    for plan in verified:
        parent = dirs.parent_of(plan.entry.path, create=True)
        try:
            fd = _open_regular(plan.partial, os.O_RDONLY)
            try:
                os.replace(plan.partial, plan.final)
                os.fchmod(fd, plan.entry.mode)  # the file just renamed, whatever its name now points to
            finally:
                os.close(fd)
        except OSError as e:
            raise _dest_error(e, plan.final) from None
        parents.add(parent)
    for parent in parents:
        fsync_dir(parent)


def _truncate_partial(plan: _FilePlan) -> None:
    """Give the assembled partial file its exact size (an empty file has had no write; a partial
    may hold more bytes than the file has)."""
    try:
        fd = _open_regular(plan.partial, os.O_WRONLY | os.O_CREAT)
        try:
            os.ftruncate(fd, plan.entry.size)
        finally:
            os.close(fd)
    except OSError as e:
        raise _dest_error(e, plan.partial) from None


def _write_at(path: str | Path, offset: int, data: bytes, *, whole: bool = False) -> None:
    """Write a chunk at its offset, creating the partial file on its first write. Files are
    opened per write, not held open: a model of many files would exhaust the descriptor limit.
    ``whole``: ``data`` is the entire file; whatever the partial held before is cut off."""
    try:
        fd = _open_regular(path, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if whole else 0))
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
        finally:
            os.close(fd)
    except OSError as e:
        raise _dest_error(e, path) from None
