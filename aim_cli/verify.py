"""Audits. Each one reads, compares and returns a report; none of them writes.

    verify_version(repo, ref)   re-read every blob of one version from storage, in parallel, and check
                                its BLAKE3 and size: missing or corrupt blobs and the files they hold.
    verify_local(ref, DIR)      compare DIR with the manifest by whole-file digests (no blob reads):
                                modified, missing and extra files. DIR/.aim* (pull's working files) is
                                not part of the comparison.
    check_repo(repo)            every manifest parses and validates, every blob it names is stored with
                                the size it says, nothing below models/ or blobs/ is a stray; with
                                ``read_data`` every stored blob is re-hashed.
                                Also counts the unreferenced blobs that `repo gc` would free.

Memory stays bounded: at most ``jobs`` blobs are in memory at once.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aim_cli import manifest as mf
from aim_cli.chunking import file_digest
from aim_cli.errors import BlobCorruptError, BlobMissingError, ConfigError, IntegrityError, UsageError
from aim_cli.gc import read_manifests
from aim_cli.progress import NullProgress
from aim_cli.store import REPO_META_KEY, Repository, VersionKey, VersionRef


@dataclass(frozen=True)
class BlobProblem:
    digest: str
    problem: str  # "missing", "corrupt" or "size"
    detail: str
    used_by: list[str]  # the files holding the blob: "path" in a version report, "model:tag/path" in a check


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


@dataclass
class CheckReport:
    repo: str
    versions: int = 0
    referenced: int = 0  # distinct blobs named by the readable manifests
    stored: int = 0
    read: int = 0  # blobs re-hashed (--read-data)
    unreferenced: int = 0
    unreferenced_bytes: int = 0
    broken: list[tuple[str, str]] = field(default_factory=list)  # (model:tag or aim-repo.json, why)
    problems: list[BlobProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.broken or self.problems)


def _read_blob(repo: Repository, digest: str, size: int) -> tuple[str, str] | None:
    """None if the blob is stored, intact and of ``size`` bytes; else (problem, detail). At most
    ``size + 1`` bytes are read: an oversized object is refused, not loaded."""
    try:
        repo.get_blob(digest, size)
    except BlobMissingError:
        return "missing", "not stored"
    except BlobCorruptError:
        return "corrupt", f"its bytes are not the {size} bytes its digest names"
    return None


def _users(manifests: list[mf.Manifest], digests: set[str], *, qualified: bool) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {d: [] for d in digests}
    for m in manifests:
        for f in m.files:
            for digest, _ in f.chunks:
                if digest in users:
                    name = f"{m.model}:{m.tag}/{f.path}" if qualified else f.path
                    if name not in users[digest]:
                        users[digest].append(name)
    return users


def verify_version(repo: Repository, ref: VersionRef, *, jobs: int = 8, progress=None) -> VersionReport:
    m = ref.manifest
    sizes = {digest: size for f in m.files for digest, size in f.chunks}
    progress = progress or NullProgress()
    progress.start("verify", sum(sizes.values()))

    def check(digest: str):
        found = _read_blob(repo, digest, sizes[digest])
        progress.advance(sizes[digest])
        return found

    ordered = sorted(sizes)
    try:
        with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="aim-verify") as pool:
            results = list(pool.map(check, ordered))
    finally:
        progress.close()
    bad = {d: r for d, r in zip(ordered, results) if r is not None}
    users = _users([m], set(bad), qualified=False)
    problems = [BlobProblem(d, p, detail, users[d]) for d, (p, detail) in sorted(bad.items())]
    return VersionReport(m.model, m.tag, ref.digest, len(sizes), sum(sizes.values()), problems)


def _walk(root: Path) -> dict[str, os.stat_result]:
    """Every non-directory entry under ``root`` (symlinks not followed), by relative path."""
    found: dict[str, os.stat_result] = {}
    stack = [(root, "")]
    while stack:
        directory, rel = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if not rel and entry.name.startswith(".aim"):
                    continue  # pull's lock and partial files
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((Path(entry.path), f"{rel}{entry.name}/"))
                else:
                    found[f"{rel}{entry.name}"] = st
    return found


def verify_local(ref: VersionRef, directory: str | os.PathLike, *, jobs: int = 8) -> LocalReport:
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory", "pass the directory the version was pulled into")
    m = ref.manifest
    try:
        found = _walk(root)
    except PermissionError as e:
        raise UsageError(f"cannot read {e.filename}", "check its permissions") from None
    expected = {f.path: f for f in m.files}
    missing = sorted(p for p in expected if p not in found)
    extra = sorted(p for p in found if p not in expected)
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

    def differs(entry: mf.FileEntry) -> bool:
        try:
            return file_digest(root / entry.path) != entry.blake3
        except OSError:
            return True

    with ThreadPoolExecutor(max(1, min(jobs, len(to_hash) or 1)), thread_name_prefix="aim-hash") as pool:
        modified += [e.path for e, bad in zip(to_hash, pool.map(differs, to_hash)) if bad]
    return LocalReport(m.model, m.tag, ref.digest, str(root), len(m.files), sorted(modified), missing, extra)


def _stray_why(vk: VersionKey, unreadable: str | None) -> str:
    what = "not a version aim_cli wrote" + (f" ({unreadable})" if unreadable else ", though it parses as a manifest")
    if vk.model is None:
        return f"{what}; remove it from the storage by hand"
    return f"{what}; `aim_cli model delete-version REPO {vk.model} --tag {vk.name!r}` removes it"


def check_repo(repo: Repository, *, read_data: bool = False, jobs: int = 8, progress=None) -> CheckReport:
    """NotARepositoryError (exit 3) for a root without aim-repo.json; DamagedStorageError when a
    listing meets a link or special file; everything else is reported."""
    report = CheckReport(repo.name)
    try:
        repo.params()
    except (IntegrityError, ConfigError) as e:
        report.broken.append((REPO_META_KEY, e.message))
    scan = read_manifests(repo)
    manifests = scan.manifests
    report.broken += scan.broken + [(vk.key, _stray_why(vk, why)) for vk, why in scan.strays]
    report.broken += repo.summary_problems()  # a summary without its version, unreadable, or disagreeing
    report.versions = len(manifests) - sum(1 for _, why in scan.strays if why is None)

    referenced: dict[str, int] = {}
    sizes_disagree: set[str] = set()
    for m in manifests:
        for f in m.files:
            for digest, size in f.chunks:
                if referenced.setdefault(digest, size) != size:
                    sizes_disagree.add(digest)
    stored: dict[str, int] = {}
    for key, digest, size in repo.iter_blob_keys():
        if digest is None:
            report.broken.append((key, "not a blob key aim_cli writes; remove it from the storage by hand"))
        else:
            stored[digest] = size
    report.referenced, report.stored = len(referenced), len(stored)

    bad: dict[str, tuple[str, str]] = {}
    for digest in sorted(sizes_disagree):
        bad[digest] = ("size", "manifests disagree on its size")
    for digest, size in referenced.items():
        if digest not in stored:
            bad[digest] = ("missing", "not stored")
        elif stored[digest] != size and digest not in bad:
            bad[digest] = ("size", f"{stored[digest]} bytes stored, the manifest says {size}")

    if read_data:
        to_read = sorted(d for d in stored if d not in bad)
        progress = progress or NullProgress()
        progress.start("check", sum(stored[d] for d in to_read))

        def check(digest: str):
            found = _read_blob(repo, digest, min(stored[digest], mf.MAX_CHUNK_SIZE))
            progress.advance(stored[digest])
            return found

        try:
            with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="aim-check") as pool:
                for digest, found in zip(to_read, pool.map(check, to_read)):
                    if found is None:
                        report.read += 1
                    elif found[0] == "corrupt" or digest in referenced:
                        bad[digest] = found  # an unreferenced blob that vanished was just collected
        finally:
            progress.close()

    users = _users(manifests, set(bad), qualified=True)
    report.problems = [BlobProblem(d, p, detail, users[d]) for d, (p, detail) in sorted(bad.items())]
    garbage = [size for d, size in stored.items() if d not in referenced]
    report.unreferenced, report.unreferenced_bytes = len(garbage), sum(garbage)
    return report
