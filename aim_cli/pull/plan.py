"""Plan a pull: read DEST (never writing to it) and say, for each selected file of the version,
what the pull will do, before it does anything.

    keep    the file at its final path is complete: every chunk right at its offset (its mode
            is set if that alone differs)
    local   it is written from local sources only: chunks already in its partial file, in files
            of DEST (an earlier version, another version's partial files, files --delete will
            remove) or in --reference directories
    fetch   some of its chunks come from the chunk cache or the repository

Byte counts are of raw chunk bytes, as the manifest names them: what a fetch costs as stored
(format 2 compresses) is known only once fetched, and a chunk the cache holds is counted as
fetched here. The space needed is what the files still to be written take beyond the bytes
their partial files already hold.

``plan_pull`` returns a ``PullPlan``: the public, typed plan (``PullPlan.to_json`` is the shape
`model pull --dry-run --json` prints, documented in the README), carrying in ``PullPlan.work``
what the executor (pipeline.py) needs: the files to assemble, the local chunk sources, the modes
to set, leftover partial files and the files to delete. The planner only reads, in a pull as in a
dry run: what has to be written into DEST before it can be planned (the work directory, partial
files' modes, the case probe) is written by dest_writer.prepare_dest under DEST's lock, which
hands the planner a ``DestFacts`` (layout.py); a dry run's come from dest_access.inspect_dest,
which writes nothing and takes no lock, and its plan has no ``work``.

Files of at most one chunk (most files of a model but its weights) are planned in batches: DEST
is read with one listdir per directory, not an lstat per file.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import blake3

from aim_cli.chunking.cdc import batches
from aim_cli.errors import UsageError
from aim_cli.format import manifest as mf
from aim_cli.progress import NullProgress
from aim_cli.pull.case import fold
from aim_cli.pull.deltas import local_dependents
from aim_cli.pull.dest_access import DestDirs, dest_error, open_regular
from aim_cli.pull.dest_index import EMPTY, DestIndex
from aim_cli.pull.layout import PARTIAL_DIR, WORK_DIR, DestFacts, partial_name
from aim_cli.pull.sources import LocalFiles

if TYPE_CHECKING:
    from aim_cli.pull.assembly_digest import InOrderDigest
from aim_cli.repository import VersionRef
from aim_cli.util.fs import display_path
from aim_cli.util.ignores import any_ignored, is_ignored
from aim_cli.util.patterns import PathFilter
from aim_cli.util.walk import walk_tree

KEEP, LOCAL, FETCH = "keep", "local", "fetch"


# -- the typed plan ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PlannedFile:
    path: str
    size: int
    action: str  # KEEP, LOCAL or FETCH (the module docstring says what each means)
    reuse_bytes: int  # bytes written from DEST's partial file, DEST's other files or --reference
    fetch_raw_bytes: int  # raw bytes of the chunks to take from the cache or the repository
    fetch_chunks: int
    #: Of those, the chunks to take as deltas against a local chunk (format 3; pull/deltas.py).
    delta_chunks: int = 0


@dataclass
class PullPlan:
    """What a pull of ``model:tag`` into ``dest`` will do (see the module docstring)."""

    model: str
    tag: str
    digest: str
    newest: bool  # the tag was chosen as the newest version
    dest: str  # absolute
    include: list[str]
    exclude: list[str]
    files: list[PlannedFile]  # the selected files, in the manifest's order
    delete: list[str]  # files --delete removes: regular files of DEST the version does not hold, selected
    delete_bytes: int
    space_needed: int
    space_available: int
    #: Chunk to fetch -> (the local chunk stored as a delta against it, the local source holding it).
    delta_bases: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: What the executor needs (None for a dry run's plan, made without the lock); not part of the plan's shape.
    work: PlanWork | None = field(default=None, repr=False, compare=False)

    def _sum(self, action: str | None, attr: str) -> int:
        return sum(getattr(f, attr) for f in self.files if action is None or f.action == action)

    def _count(self, action: str) -> int:
        return sum(1 for f in self.files if f.action == action)

    @property
    def total_size(self) -> int:
        return self._sum(None, "size")

    @property
    def reuse_bytes(self) -> int:
        return self._sum(None, "reuse_bytes")

    @property
    def fetch_raw_bytes(self) -> int:
        return self._sum(None, "fetch_raw_bytes")

    def to_json(self) -> dict:
        """The stable shape of `model pull --dry-run --json` (README, "JSON output")."""
        return {
            "dry_run": True,
            "model": self.model,
            "tag": self.tag,
            "digest": self.digest,
            "newest": self.newest,
            "dest": self.dest,
            "include": self.include,
            "exclude": self.exclude,
            "files": [
                {
                    "path": f.path,
                    "size": f.size,
                    "action": f.action,
                    "reuse_bytes": f.reuse_bytes,
                    "fetch_raw_bytes": f.fetch_raw_bytes,
                }
                for f in self.files
            ],
            "delete": self.delete,
            "totals": {
                "files": len(self.files),
                "size": self.total_size,
                "keep_files": self._count(KEEP),
                "keep_bytes": self._sum(KEEP, "size"),
                "local_files": self._count(LOCAL),
                "fetch_files": self._count(FETCH),
                "reuse_bytes": self.reuse_bytes,
                "fetch_raw_bytes": self.fetch_raw_bytes,
                "fetch_chunks": self._sum(None, "fetch_chunks"),
                "delta_chunks": self._sum(None, "delta_chunks"),
                "delta_bases": {
                    name: sum(1 for _, source in self.delta_bases.values() if source == name)
                    for name in ("dest", "reference")
                },
                "delete_files": len(self.delete),
                "delete_bytes": self.delete_bytes,
                "space_needed": self.space_needed,
                "space_available": self.space_available,
            },
        }


@dataclass
class PlanWork:
    """The executor's part of a plan."""

    files: list[FilePlan]  # to assemble
    modes: list[tuple[str, int]]  # complete files whose mode alone differs: (final path, mode)
    kept_files: int
    kept_bytes: int
    local_sources: list[LocalFiles]  # DEST's files, then --reference directories
    leftovers: list[Path]  # partial files of another version's pull: removed at the end
    index: DestIndex = EMPTY  # DEST's index as loaded (dest_index.py), to carry its other entries over
    #: Files complete at their final path: (entry, final path, the lstat their check started from,
    #: whether their mode is set): DEST's next index records them if they are unchanged by then.
    complete: list[tuple[mf.FileEntry, str, os.stat_result, bool]] = field(default_factory=list)


def _offsets(chunks: Sequence[tuple[str, int]]) -> list[int]:
    out, pos = [], 0
    for _, size in chunks:
        out.append(pos)
        pos += size
    return out


@dataclass(slots=True)  # slots, and no lock or set until needed: a pull of 100,000 files holds as many
class FilePlan:
    """One file to assemble under its partial name, then rename to ``final``."""

    entry: mf.FileEntry
    final: str  # paths as str: a Path object costs four times the memory
    partial: str
    offsets: list[int]
    have: AbstractSet[int] = frozenset()  # indexes of chunks already right in the partial
    remaining: int = 0  # chunks still to write (counted down by the assembler's threads)
    lock: threading.Lock | None = None  # guards ``remaining`` (files of several chunks only)
    digest: InOrderDigest | None = None  # the whole-file digest, hashed as chunks are written
    copied: set[int] | None = None  # chunks copied in unread (copy_file_range), under ``lock``

    @property
    def one_chunk(self) -> bool:
        """At most one chunk: assembled in one write, in a batch of such files (pull._Assembler)."""
        return len(self.entry.chunks) <= 1

    def missing(self) -> list[int]:
        return [i for i in range(len(self.entry.chunks)) if i not in self.have]

    def bytes_present(self) -> int:
        return sum(self.entry.chunks[i][1] for i in self.have)


# -- reading DEST ------------------------------------------------------------------------------------
def chunks_in_place(path: str | Path, entry: mf.FileEntry, offsets: list[int], advance=None) -> set[int]:
    """Indexes of the chunks of ``entry`` whose bytes are already right at their offsets in
    ``path`` (a partial file, or an earlier file at the final path). One sequential read."""
    present: set[int] = set()
    try:
        fd = open_regular(path, os.O_RDONLY)
    except OSError:
        return present
    try:
        for i, ((digest, size), offset) in enumerate(zip(entry.chunks, offsets, strict=True)):
            data = os.pread(fd, size, offset)
            if len(data) == size and blake3.blake3(data).hexdigest() == digest:
                present.add(i)
            if advance is not None:
                advance(size)
    finally:
        os.close(fd)
    return present


@dataclass(frozen=True, slots=True)
class _Target:
    """A file of the version, where it goes, and what the one pass over DEST saw of it."""

    entry: mf.FileEntry
    final: str
    partial: str
    final_listed: bool  # a name is (or may be) at the final path, of any type
    partial_listed: bool  # a partial file of this file's is in the partial directory


class DestNames:
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
                names = frozenset(fold(n) for n in os.listdir(directory))
            except (FileNotFoundError, NotADirectoryError):
                names = frozenset()
            except OSError as e:
                raise dest_error(e, directory) from None
            self._names[directory] = names
        return fold(name) in names


@dataclass(frozen=True, slots=True)
class _Complete:
    """The file at the final path is complete; ``set_mode``: its mode alone differs."""

    st: os.stat_result  # its lstat before it was checked
    set_mode: bool


def _plan_file(
    target: _Target,
    dest_files: LocalFiles,
    references: LocalFiles,
    reference_dirs: Sequence[Path],
    advance,
    index: DestIndex = EMPTY,
) -> FilePlan | _Complete:
    """What DEST holds of one file: _Complete if the file at the final path is complete (the
    right size, and every chunk right at its offset: a file of another size is never complete,
    even one with no chunks), with ``set_mode`` if only its mode differs, else its plan, with the
    chunks its partial file already holds. The final file and the references are indexed as
    sources of the chunks still missing. A final file DEST's ``index`` vouches for (its stat
    unchanged: dest_index.py) is not read: its digest and chunks are the index's."""
    entry, final, partial = target.entry, target.final, target.partial
    plan = FilePlan(entry, final, partial, _offsets(entry.chunks))
    st = None
    if target.final_listed:
        try:
            st = os.lstat(final)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise dest_error(e, final) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(
            f"{display_path(final)} is a directory, the version has a file there", "move it away or pull elsewhere"
        )
    if st is not None and stat.S_ISREG(st.st_mode):
        known = index.trusted(entry.path, st)
        if known is not None:
            advance(st.st_size)
            if known.blake3 == entry.blake3 and known.size == entry.size:
                complete = _complete(st, entry)
                if complete is not None:
                    return complete
            # Every chunk of the earlier file, where the index says it is: moved data is found too.
            dest_files.add(final, zip((d for d, _ in known.chunks), _offsets(known.chunks), strict=True))
        else:
            same_size = st.st_size == entry.size
            in_place = chunks_in_place(final, entry, plan.offsets, advance) if same_size else set()
            if same_size and len(in_place) == len(entry.chunks):  # every byte verified chunk by chunk
                complete = _complete(st, entry)
                if complete is not None:
                    return complete
            dest_files.add(final, [(entry.chunks[i][0], plan.offsets[i]) for i in in_place])
            if len(in_place) * 2 < len(entry.chunks):  # changed beyond in-place edits: look for moved data
                dest_files.add_file(final)
    if target.partial_listed:  # a regular file of ours (dest_access.scan_partials); reopened without following links
        plan.have = chunks_in_place(partial, entry, plan.offsets, advance)
    if len(plan.have) < len(entry.chunks):
        for ref_dir in reference_dirs:
            references.add_file(ref_dir / entry.path)
    return plan


def _complete(st: os.stat_result, entry: mf.FileEntry) -> _Complete | None:
    if stat.S_IMODE(st.st_mode) == entry.mode:
        return _Complete(st, False)
    if st.st_nlink == 1:  # a file with other names is replaced, not chmodded under them all
        return _Complete(st, True)
    return None


def _extra_files(dest: Path, version_paths: Iterable[str], selection: PathFilter) -> list[tuple[str, int]]:
    """(path, size) of the regular files under DEST that --delete removes: not in the version,
    selected by the patterns. Symlinks (to files or directories) are neither followed nor
    listed, nor are special files; DEST/.aim* is pull's own; push's default ignores (.git/,
    .cache/huggingface/, __pycache__/, .DS_Store: util.ignores) are never removed, nor entered
    unless the version holds such paths itself. A name that differs from a
    version's path only by case or Unicode normalisation (``readme.md`` beside ``README.md``)
    is kept only where DEST's directory holding it folds names (see ``_same_file_folded``);
    on a case-sensitive directory it is another file, and goes."""
    version_paths = list(version_paths)
    try:
        # The walk verify --local compares DEST by: a version pushed with --no-default-ignores
        # holds .git/... paths, which must then be seen.
        found = walk_tree(dest, skip_ignored=not any_ignored(version_paths))
    except FileNotFoundError:
        return []  # DEST does not exist yet (a dry run)
    except OSError as e:
        raise dest_error(e, e.filename or dest) from None
    by_fold: dict[str, str] = {}
    for path in version_paths:
        by_fold.setdefault(fold(path), path)
    version = set(version_paths)
    doomed = []
    for path, st in found.items():
        if path in version or not stat.S_ISREG(st.st_mode) or not selection.selects(path) or is_ignored(path):
            continue
        twin = by_fold.get(fold(path))
        if twin is not None and twin not in found and _same_file_folded(dest, twin, st):
            continue  # the version's own file, under the name this directory folds it to
        doomed.append((path, st.st_size))
    return sorted(doomed)


def _same_file_folded(dest: Path, twin: str, st: os.stat_result) -> bool:
    """Whether DEST/``twin`` (a version path, not listed in DEST) names the file ``st`` is of:
    the probe of case and normalisation folding, asked of the very directory that holds it (ext4
    folds case per directory, and a listing never shows both names where names fold). Read-only:
    a lookup under the version's name, compared by device and inode."""
    try:
        other = os.lstat(dest / twin)
    except OSError:
        return False  # no such name: this directory tells the two apart
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def free_space(dest: Path) -> int:
    """Free bytes on the filesystem DEST is (or will be) on."""
    directory = dest
    while not directory.exists() and directory.parent != directory:
        directory = directory.parent
    return shutil.disk_usage(directory).free


# -- the planner -------------------------------------------------------------------------------------
def _targets(dest: Path, selected: list[mf.FileEntry], partials: dict[str, Path]) -> list[_Target]:
    """Where each selected file goes, where its partial file would be, and whether a listing of
    DEST (or of the partial files) may hold either."""
    partial_dir = dest / WORK_DIR / PARTIAL_DIR
    dirs = DestDirs(dest)
    parents = [dirs.parent_of(e.path, create=False) for e in selected]  # one Path per directory, shared
    names = DestNames()
    targets = []
    for e, parent in zip(selected, parents, strict=True):
        name, partial = e.path.rsplit("/", 1)[-1], partial_name(e)
        targets.append(
            _Target(
                e,
                os.path.join(parent, name),
                os.path.join(partial_dir, partial),
                names.may_have(parent, name),
                partial in partials,
            )
        )
    return targets


def plan_pull(
    repo,
    ref: VersionRef,
    dest: Path,
    facts: DestFacts,
    *,
    selection: PathFilter | None = None,
    newest: bool = False,
    references: Sequence[Path] = (),
    delete: bool = False,
    progress=None,
    index: DestIndex = EMPTY,
) -> PullPlan:
    """Plan the pull of ``ref``'s selected files into ``dest`` (absolute), from what ``facts``
    say of it (prepare_dest under DEST's lock, or inspect_dest for a dry run: then the plan has
    no ``work``) and DEST's ``index`` (dest_index.load_index; EMPTY: every file is read). Writes
    nothing. Files are hashed and re-chunked in parallel threads (blake3 and pyfastcdc release
    the GIL)."""
    progress = progress or NullProgress()
    m = ref.manifest
    selection = selection or PathFilter()
    selected = [e for e in m.files if selection.selects(e.path)]
    partials = {p.name: p for p in facts.partials}
    targets = _targets(dest, selected, partials)
    # Partials of the version's unselected files stay for a later pull of them; others are
    # another version's: sources of chunks, removed at the end.
    version_partials = {partial_name(e) for e in m.files}
    leftovers = [p for name, p in partials.items() if name not in version_partials]
    doomed = _extra_files(dest, [e.path for e in m.files], selection) if delete else []
    dest_files, ref_files = LocalFiles("dest", repo.format()), LocalFiles("reference", repo.format())

    # Checking a large model already on disk takes a while: it gets a bar of its own.
    on_disk = sum(t.entry.size for t in targets if t.final_listed or t.partial_listed)
    if on_disk:
        progress.start("check", on_disk)

    def plan_batch(batch: list[_Target]) -> list[FilePlan | _Complete]:
        return [_plan_file(t, dest_files, ref_files, references, progress.advance, index) for t in batch]

    # In batches (a big file alone in its own): a task per small file would cost more than its plan.
    threads = os.cpu_count() or 2
    tasks = list(batches(targets, lambda t: t.entry.size, workers=threads))
    # Files that will go (another version's partials, --delete's) are read as sources too: a
    # renamed file is not fetched again.
    to_index = [*leftovers, *(dest / path for path, _ in doomed)]
    with ThreadPoolExecutor(
        max(1, min(threads, len(tasks) + len(to_index))), thread_name_prefix="aim-plan"
    ) as planners:
        for path in to_index:
            planners.submit(dest_files.add_file, path)
        outcomes = [outcome for batch in planners.map(plan_batch, tasks) for outcome in batch]
    progress.close()

    to_assemble = [outcome for outcome in outcomes if isinstance(outcome, FilePlan)]
    delta_bases = local_dependents(repo, m, to_assemble, [dest_files, ref_files])

    planned, modes, complete = _planned(targets, outcomes, dest_files, ref_files, delta_bases)
    kept = [f for f in planned if f.action == KEEP]
    kept_bytes, local = sum(f.size for f in kept), [dest_files, ref_files]
    work = (
        PlanWork(to_assemble, modes, len(kept), kept_bytes, local, leftovers, index, complete) if facts.locked else None
    )
    space_needed = sum(p.entry.size - p.bytes_present() for p in to_assemble)
    return PullPlan(
        m.model,
        m.tag,
        ref.digest,
        newest,
        str(dest),
        list(selection.include),
        list(selection.exclude),
        planned,
        [path for path, _ in doomed],
        sum(size for _, size in doomed),
        space_needed,
        free_space(dest),
        delta_bases,
        work,
    )


def _planned(targets: list[_Target], outcomes: list[FilePlan | _Complete], dest_files, ref_files, delta_bases):
    """Each file's PlannedFile; the modes to set; the files complete (PlanWork.complete)."""
    planned, modes, complete = [], [], []
    for t, outcome in zip(targets, outcomes, strict=True):
        if isinstance(outcome, FilePlan):
            planned.append(_classify(outcome, dest_files, ref_files, delta_bases))
            continue
        if outcome.set_mode:
            modes.append((t.final, t.entry.mode))
        complete.append((t.entry, t.final, outcome.st, outcome.set_mode))
        planned.append(PlannedFile(t.entry.path, t.entry.size, KEEP, 0, 0, 0))
    return planned, modes, complete


def _classify(
    plan: FilePlan, dest_files: LocalFiles, references: LocalFiles, delta_bases: dict[str, tuple[str, str]]
) -> PlannedFile:
    """The planned action of a file to assemble: each missing chunk is either in a local source
    (``reuse``) or to be fetched (as a delta against a local chunk when ``delta_bases`` has it)."""
    entry = plan.entry
    reuse, fetch, chunks, deltas = plan.bytes_present(), 0, 0, 0
    for i in plan.missing():
        digest, size = entry.chunks[i]
        if digest in dest_files or digest in references:
            reuse += size
        else:
            fetch += size
            chunks += 1
            deltas += digest in delta_bases
    return PlannedFile(entry.path, entry.size, FETCH if chunks else LOCAL, reuse, fetch, chunks, deltas)
