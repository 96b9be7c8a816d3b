"""Audits of one version. Each reads, compares and returns a report; none of them writes.

    verify_version(repo, ref)   re-read every blob of one version from storage, in parallel, and check
                                its BLAKE3 and size: missing or corrupt blobs and the files they hold.
    verify_local(ref, DIR)      compare DIR with the manifest by whole-file digests (no blob reads):
                                modified, missing and extra files. DIR/.aim* (pull's working files) is
                                not part of the comparison, nor are push's default ignores (.git/,
                                __pycache__/ ...: util.ignores) unless the version holds them.

Memory stays bounded: at most ``jobs`` blobs are in memory at once. `repo check` (check.py) reads
blobs the same way (``read_blob``) and reports them as ``BlobProblem``s too.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aim_cli.audit.scan import add_users, referenced_blobs
from aim_cli.chunking.cdc import file_digest
from aim_cli.defaults import DEFAULT_JOBS
from aim_cli.errors import BlobCorruptError, BlobMissingError, UsageError
from aim_cli.format import manifest as mf
from aim_cli.progress import NullProgress
from aim_cli.repository import Repository, VersionRef
from aim_cli.repository.parallel import map_bounded
from aim_cli.util.fs import display_path
from aim_cli.util.ignores import any_ignored, is_ignored
from aim_cli.util.walk import local_directory, walk_tree


@dataclass(frozen=True)
class BlobProblem:
    digest: str
    problem: str  # "missing", "corrupt", "size"; `repo check` of format 3 also "edge" and "chain" (check_edges.py)
    detail: str
    used_by: list[str]  # the files holding the blob: "path" in a version report, "model:tag/path" in a check
    used_by_omitted: int = 0  # files holding it beyond those listed (`repo check` names the first few)


@dataclass
class VersionReport:
    model: str
    tag: str
    digest: str
    blobs: int
    bytes: int
    problems: list[BlobProblem]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class LocalReport:
    model: str
    tag: str
    digest: str
    directory: str
    files: int
    modified: list[str]
    missing: list[str]
    extra: list[str]

    @property
    def ok(self) -> bool:
        return not (self.modified or self.missing or self.extra)


def read_blob(
    repo: Repository, digest: str, size: int | None, stored_size: int | None = None
) -> tuple[str, str] | None:
    """None if the blob is stored, intact and holds ``size`` bytes; else (problem, detail). A
    blob no manifest names (``size`` None) is read as ``stored_size`` bytes and must hold what
    its own header says. Reads are bounded: an oversized object is refused, not loaded."""
    try:
        if size is None:
            assert stored_size is not None  # a blob no manifest names is read by its listed size
            repo.read_stored_blob(digest, stored_size)
        else:
            repo.get_blob(digest, size)
    except BlobMissingError:
        return "missing", "not stored"
    except BlobCorruptError as e:
        return "corrupt", e.reason
    return None


def verify_version(repo: Repository, ref: VersionRef, *, jobs: int = DEFAULT_JOBS, progress=None) -> VersionReport:
    m = ref.manifest
    sizes = referenced_blobs([m])
    progress = progress or NullProgress()
    progress.start("verify", sum(sizes.values()))

    def check(digest: str):
        found = read_blob(repo, digest, sizes[digest])
        progress.advance(sizes[digest])
        return found

    try:
        bad = {d: found for d, found in map_bounded(check, sorted(sizes), jobs, "aim-verify") if found is not None}
    finally:
        progress.close()
    users: dict[str, list[str]] = {d: [] for d in bad}
    add_users(users, m, qualified=False)
    problems = [BlobProblem(d, p, detail, users[d]) for d, (p, detail) in sorted(bad.items())]
    return VersionReport(m.model, m.tag, ref.digest, len(sizes), sum(sizes.values()), problems)


def verify_local(
    ref: VersionRef,
    directory: str | os.PathLike,
    *,
    jobs: int = DEFAULT_JOBS,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    progress=None,
) -> LocalReport:
    """``include``/``exclude`` (aim_cli/patterns.py) select the files compared: ``files`` counts
    them, and only files the patterns select can be missing, modified or extra."""
    import logging

    from aim_cli.util.patterns import PathFilter

    selection = PathFilter.of(include, exclude)
    m = ref.manifest
    selection.check([f.path for f in m.files], logging.getLogger(__name__).warning)
    root = local_directory(directory, "--local", "pass the directory the version was pulled into")
    try:  # push's default ignores (.git/ ...) are not extra files; entered only if the version holds some
        found = walk_tree(root, skip_ignored=not any_ignored(f.path for f in m.files))
    except OSError as e:
        raise UsageError(
            f"cannot read {display_path(e.filename or root)}: {e.strerror or e}", "check its permissions"
        ) from None
    expected = {f.path: f for f in m.files if selection.selects(f.path)}
    missing = sorted(p for p in expected if p not in found)
    extra = sorted(p for p in found if p not in expected and selection.selects(p) and not is_ignored(p))
    modified: list[str] = []
    to_hash = []
    for path, entry in expected.items():
        st = found.get(path)
        if st is None:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
            modified.append(path)
        else:
            to_hash.append(entry)

    progress = progress or NullProgress()

    def differs(entry: mf.FileEntry) -> bool:
        try:
            return file_digest(root / entry.path) != entry.blake3  # util.walk.open_regular: no link, no FIFO
        except OSError:
            return True
        finally:
            progress.advance(entry.size)

    progress.start("verify", sum(e.size for e in to_hash))
    try:
        with ThreadPoolExecutor(max(1, min(jobs, len(to_hash) or 1)), thread_name_prefix="aim-hash") as pool:
            modified += [e.path for e, bad in zip(to_hash, pool.map(differs, to_hash), strict=True) if bad]
    finally:
        progress.close()
    return LocalReport(m.model, m.tag, ref.digest, str(root), len(expected), sorted(modified), missing, extra)
