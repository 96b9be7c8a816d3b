"""`repo check`: every manifest parses and validates, every blob it names is stored with the size
it says, nothing below models/, blobs/ or edges/ is a stray; in format 3, every blob's header is
read and the delta edges judged against the markers (check_edges.py); with ``read_data`` every
stored blob is decoded (a delta through its chain) and re-hashed. It reads and reports; it never
writes.

Aliases are judged by check_aliases.py: each history whole and true, each set alias's version
there with the digest it names, no alias shadowed by a tag.

Also counts the unreferenced blobs that `repo gc` would free, and checks every signature's
structure (not its cryptography: `model verify --public-key` does that): one per version that
exists, bounded, a Sigstore bundle.

Memory stays bounded: at most ``jobs`` blobs are in memory at once, and the check holds one
manifest at a time plus the set of chunks they name (scan.scan_manifests): memory grows with the
distinct chunks, never with versions x chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aim_cli.audit.check_aliases import alias_problems
from aim_cli.audit.check_edges import EDGE_PROBLEMS, check_edges
from aim_cli.audit.scan import ChangedChunks, add_users, scan_manifests
from aim_cli.audit.verify import BlobProblem, read_blob
from aim_cli.defaults import DEFAULT_JOBS
from aim_cli.errors import AimError, IntegrityError, NotFoundError
from aim_cli.format import manifest as mf
from aim_cli.format import summary as sm
from aim_cli.format.layout import REPO_META_KEY, SignatureKey, VersionKey, in_aliases, in_signatures, manifest_key
from aim_cli.progress import NullProgress
from aim_cli.repository import Repository
from aim_cli.repository.parallel import map_bounded

#: The most problems (and broken entries) a report lists, and files it names per problem; the
#: counts stay complete (CheckReport.*_omitted, BlobProblem.used_by_omitted).
MAX_EXAMPLES = 100
MAX_USERS = 10


@dataclass
class CheckReport:
    repo: str
    versions: int = 0
    referenced: int = 0  # distinct blobs named by the readable manifests
    stored: int = 0
    read: int = 0  # blobs re-hashed (--read-data)
    unreferenced: int = 0
    unreferenced_bytes: int = 0
    raw_bytes: int = 0  # the referenced chunks' bytes (each distinct chunk once)
    stored_bytes: int = 0  # what storage holds for them (format 2 compresses; format 1: the same)
    deltas: int = 0  # format 3: blobs whose header says delta
    markers: int = 0  # format 3: edge markers listed
    stale_markers: int = 0  # a note: dependent stored whole or a delta against another base (`repo optimize`)
    dangling_markers: int = 0  # a note: dependent not stored (`repo gc` removes them)
    broken: list[tuple[str, str]] = field(default_factory=list)  # (model:tag or aim-repo.json, why)
    problems: list[BlobProblem] = field(default_factory=list)
    # Damage is reported as complete counts plus the first examples: a report of every missing
    # chunk of every version took 1.3 GB. These count what the lists above leave out.
    broken_omitted: int = 0
    problems_omitted: int = 0

    @property
    def ok(self) -> bool:
        return not (self.broken or self.problems or self.broken_omitted or self.problems_omitted)

    @property
    def problem_count(self) -> int:
        """Every problem found, listed or not."""
        return len(self.broken) + self.broken_omitted + len(self.problems) + self.problems_omitted


class ChunkIndex:
    """The chunks that manifests name, as (digest, size) pairs, folded in one manifest at a time:
    memory grows with the distinct chunks, not with the manifests that name them. Folding runs in
    C (``set.update`` with the manifest's own tuples), with no Python step per chunk."""

    def __init__(self) -> None:
        self._pairs: set[tuple[str, int]] = set()
        self._changed = ChangedChunks()

    def add(self, manifest: mf.Manifest) -> None:
        for chunks in self._changed.of(manifest):  # those in place since the manifest before are in
            self._pairs.update(chunks)

    def sizes(self) -> dict[str, int]:
        """digest -> size of every chunk named (one of the sizes, where manifests disagree)."""
        return dict(self._pairs)

    def disagreeing(self, sizes: dict[str, int]) -> set[str]:
        """The digests that manifests name with different sizes (``sizes`` is ``self.sizes()``)."""
        if len(sizes) == len(self._pairs):
            return set()
        return {digest for digest, size in self._pairs if sizes[digest] != size}


def _stray_why(vk: VersionKey, unreadable: str | None) -> str:
    if in_signatures(vk.key):  # why it does not parse as a manifest is noise here
        return (
            "not a signature aim_cli wrote (those are models/<model>/signatures/<tag>/<signer>.sig, with valid "
            "names); remove it from the storage by hand"
        )
    if in_aliases(vk.key):
        return (
            "not an alias entry aim_cli wrote (those are models/<model>/aliases/<alias>/<n>.json, with valid names "
            "and n without leading zeros, and <n>.<signer>.sig, signer 16 hex); remove it from the storage by hand"
        )
    what = "not a version aim_cli wrote" + (f" ({unreadable})" if unreadable else ", though it parses as a manifest")
    if vk.model is None:
        return f"{what}; remove it from the storage by hand"
    return f"{what}; `aim_cli model delete-version REPO {vk.model} --tag {vk.name!r}` removes it"


def check_repo(repo: Repository, *, read_data: bool = False, jobs: int = DEFAULT_JOBS, progress=None) -> CheckReport:
    """NotARepositoryError (exit 3) for a root without aim-repo.json; DamagedStorageError when a
    listing meets a link or special file; everything else is reported."""
    report = CheckReport(repo.name)
    try:
        fmt = repo.format()  # a format this client does not know: ConfigError (upgrade), not damage
    except IntegrityError as e:
        report.broken.append((REPO_META_KEY, e.message))
        return report  # without the format no blob can be judged; the rest would be noise
    index = ChunkIndex()
    from_manifests: dict[str, sm.Summary] = {}
    signatures = sorted(repo.iter_signature_keys(), key=lambda sk: sk.key)
    bounds = _BundleBounds(signatures)
    progress = progress or NullProgress()
    scan = scan_manifests(
        repo, index.add, summaries=from_manifests, on_version=bounds.add if signatures else None, progress=progress
    )
    report.broken += scan.broken + [(vk.key, _stray_why(vk, why)) for vk, why in scan.strays]
    report.versions = scan.readable - sum(1 for _, why in scan.strays if why is None)
    referenced = index.sizes()
    sizes_disagree = index.disagreeing(referenced)
    del index  # the pairs: sizes and disagreements are all the check needs of them
    # A summary without its version, unreadable, or disagreeing with the manifest just read.
    report.broken += repo.summary_problems(known=from_manifests)
    report.broken += signature_problems(repo, scan.keys, signatures, bounds)
    report.broken += alias_problems(repo, from_manifests)

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
        elif digest in bad:
            continue
        elif not fmt.stored_size_fits(stored[digest], size):
            bad[digest] = ("size", f"{stored[digest]} bytes stored cannot hold the {size} bytes the manifest says")
        else:
            report.raw_bytes += size
            report.stored_bytes += stored[digest]

    edges = check_edges(repo, fmt, stored, bad, report.broken, jobs)
    report.deltas, report.markers = edges.deltas, edges.markers
    report.stale_markers, report.dangling_markers = edges.stale_markers, edges.dangling_markers

    if read_data:
        # A delta whose edges are broken is decoded too: a blob that is itself corrupt says so.
        to_read = sorted(d for d in stored if d not in bad or bad[d][0] in EDGE_PROBLEMS)
        progress.start("check", sum(stored[d] for d in to_read))

        def check(digest: str):
            found = read_blob(repo, digest, referenced.get(digest), stored[digest])
            progress.advance(stored[digest])
            return found

        try:
            for digest, found in map_bounded(check, to_read, jobs, "aim-check"):
                if found is None:
                    report.read += 1
                elif found[0] == "corrupt" or (digest in referenced and digest not in bad):
                    bad[digest] = found  # an unreferenced blob that vanished was just collected
        finally:
            progress.close()

    report.problems, report.problems_omitted = _problems(repo, bad)
    report.broken_omitted = max(0, len(report.broken) - MAX_EXAMPLES)
    del report.broken[MAX_EXAMPLES:]
    garbage = [size for d, size in stored.items() if d not in referenced]
    report.unreferenced, report.unreferenced_bytes = len(garbage), sum(garbage)
    return report


class _BundleBounds:
    """The largest bundle each signed version's signature can be (signing.max_bundle_bytes of its
    manifest), noted during the scan: a stored bundle larger than that is damage without being
    parsed (an 8 MiB hostile bundle parsed at 250 MB)."""

    def __init__(self, signatures: list[SignatureKey]):
        self.signed = {manifest_key(sk.model, sk.tag) for sk in signatures}
        self.bounds: dict[str, int] = {}

    def add(self, vk: VersionKey, manifest: mf.Manifest) -> None:
        if vk.key in self.signed:
            from aim_cli.signing.bundle import max_bundle_bytes  # loaded only when a version is signed

            self.bounds[vk.key] = max_bundle_bytes(manifest)

    def of(self, repo: Repository, sk: SignatureKey) -> int | None:
        """The bound of ``sk``'s version; read again if it was signed since the scan; None when
        the version cannot be read (reported as broken; its signature is judged with it)."""
        key = manifest_key(sk.model, sk.tag)
        if key in self.bounds:
            return self.bounds[key]
        from aim_cli.signing.bundle import max_bundle_bytes

        try:
            return max_bundle_bytes(repo.get_version(sk.model, sk.tag).manifest)
        except AimError:
            return None


def signature_problems(
    repo: Repository,
    manifest_keys: frozenset[str],
    keys: list[SignatureKey],
    bounds: _BundleBounds,
) -> list[tuple[str, str]]:
    """(key, why) of every damaged signature: one without its version, one larger than its
    version's signature can be, one that is not a Sigstore bundle. ``manifest_keys``: the keys of a
    listing of models/ taken before this one (a version signed since is looked up again).
    Signatures are few and each is read within its bound, in parallel."""
    found = repo.map_parallel(lambda sk: _signature_problem(repo, sk, manifest_keys, bounds), keys)
    return [(sk.key, why) for sk, why in zip(keys, found, strict=True) if why is not None]


def _signature_problem(
    repo: Repository,
    sk: SignatureKey,
    manifest_keys: frozenset[str],
    bounds: _BundleBounds,
) -> str | None:
    # The version first, then the signature: a delete removes them in the other order, so a
    # signature still there once its version is gone is one that no delete in progress removes.
    orphan = manifest_key(sk.model, sk.tag) not in manifest_keys and not repo.has_version(sk.model, sk.tag)
    if orphan:  # its content is not judged: only that it is still there
        if not repo.backend.exists(sk.key):
            return None
        return (
            f"a signature without its version (stored while its delete ran, or by hand); `aim_cli model "
            f"delete-version {repo.name} {sk.model} --tag {sk.tag}` removes it"
        )
    bound = bounds.of(repo, sk)
    if bound is None:
        return None  # its version is unreadable: reported as broken, which deleting it mends
    return read_signature(repo, sk.model, sk.tag, sk.hint, bound)[1]


def read_signature(repo: Repository, model: str, tag: str, hint: str, bound: int) -> tuple[bytes | None, str | None]:
    """One stored signature, read within ``bound`` (signing.max_bundle_bytes of its version's
    manifest) and judged as `repo check` judges every one: (bytes, None) for a well-formed bundle,
    (None, why) for a damaged one (one over the bound is not parsed), (None, None) for one gone
    since it was listed. `model copy` copies only what this accepts."""
    try:
        data = repo.get_signature(model, tag, hint, max_size=bound)
    except NotFoundError:
        return None, None
    except IntegrityError as e:
        return None, f"{e.message}; {e.hint}"
    from aim_cli.signing.bundle import bundle_problem  # imported here: check without signatures never loads it

    why = bundle_problem(data)
    if why is not None:
        return None, (
            f"not a Sigstore bundle of a signature ({why}); remove it from the storage by hand, then sign "
            f"the version again"
        )
    return data, None


def _problems(repo: Repository, bad: dict[str, tuple[str, str]]) -> tuple[list[BlobProblem], int]:
    """A BlobProblem for each of the first MAX_EXAMPLES bad digests (in digest order), with the
    first MAX_USERS files that use it ("model:tag/path"), and how many bad digests are left out.
    Found by a second pass over the manifests, only when there is damage: the first pass keeps none."""
    shown = sorted(bad)[:MAX_EXAMPLES]
    users: dict[str, list[str]] = {d: [] for d in shown}
    omitted: dict[str, int] = {}
    if users:
        scan_manifests(repo, lambda m: add_users(users, m, qualified=True, limit=MAX_USERS, omitted=omitted))
    problems = [BlobProblem(d, *bad[d], users[d], omitted.get(d, 0)) for d in shown]
    return problems, len(bad) - len(shown)
