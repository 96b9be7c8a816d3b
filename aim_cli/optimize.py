"""Re-encoding a format 3 repository's history into delta chains (docs/design.md §3.5).

`repo optimize` plans each model's history with the chain policy (deltas/policy.py: the newest
version stays whole, each older chunk becomes a delta against the same chunk of the next newer
version, chains bounded by ``max_depth``) and stores the plan's actions. Push runs the same on the
pair it just made (its version and the one before) with the policy's simplest rule (no cuts, no
attaching: a cut decodes a whole chain, too slow for a push), then `repo optimize` has little
left to do. Both hold the optimize lease (repository/leases.py): one re-encoder at a time, so two
never pass their cycle checks side by side, and gc waits for it, so no base is freed under it.

What is read: each version's manifest and the header of each of its safetensors files (their
first chunks: pairing.py), one listing of ``edges/``, and the 48-byte header of each blob reachable
from the pairs through the markers (what the policy takes as the truth about deltas). What is
written, action by action: the cuts whole (``put_plain``), then the chunk as a delta
(``put_delta``: its marker first, then the blob replaced atomically and durably); the base is a
chunk of a committed version, stored and durable. A chunk's old marker is deleted once the chunk is
stored in its new form. Killed anywhere, every blob still decodes to its bytes (a blob is named
by them), and a rerun plans again from what is stored: idempotent.

A delta that does not save ``min_saving`` over the chunk's plain blob is not stored: the pair is
declined and the rest planned again without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence, Set
from dataclasses import dataclass, field

from aim_cli.deltas import pairing, policy
from aim_cli.errors import UsageError
from aim_cli.format.repo_format import RepoFormat
from aim_cli.progress import NullProgress
from aim_cli.repository import Repository, VersionRef, leases

log = logging.getLogger(__name__)

#: Files whose header is read for pairing: a first chunk of anything else is not worth a fetch.
SAFETENSORS_SUFFIX = ".safetensors"


@dataclass
class OptimizeResult:
    """What a re-encoding did (or, with ``dry_run``, would do)."""

    repo: str
    models: list[str] = field(default_factory=list)
    pairs: int = 0  # chunk pairs of consecutive versions considered
    planned: int = 0  # actions planned
    reencoded: int = 0  # chunks stored as deltas
    made_whole: int = 0  # chunks stored whole again (a chain cut, a newest chunk that was a delta)
    declined: int = 0  # deltas that did not save min_saving: left as they were
    stale_markers: int = 0  # markers removed whose dependent is no (longer a) delta against their base
    stored_before: int = 0  # stored bytes of the chunks re-encoded, before
    stored_after: int = 0  # and after
    dry_run: bool = False


def _layouts(read: Callable[[str, int], bytes], fmt: RepoFormat, ref: VersionRef) -> dict:
    """path -> safetensors layout of each file of ``ref`` cut by its layout (pairing.py);
    ``read(digest, size)`` gives a chunk's raw bytes."""
    assert fmt.tensors is not None
    out = {}
    for entry in ref.manifest.files:
        if not entry.path.endswith(SAFETENSORS_SUFFIX) or not entry.chunks:
            continue
        head = read(*entry.chunks[0])
        end = pairing.header_end(head[:8], entry.size, fmt.chunking, fmt.tensors)
        if end is None:
            continue
        if end > len(head):
            head = b"".join(read(d, s) for d, s in pairing.head_chunks(entry, end))
        layout = pairing.parse_layout(head, entry.size, fmt.chunking, fmt.tensors)
        if layout is not None:
            out[entry.path] = layout
    return out


def _history(repo: Repository, model: str) -> list[VersionRef]:
    """The versions of ``model``, oldest first by their manifests' ``created_at`` (then tag)."""
    return _oldest_first(repo.map_parallel(lambda tag: repo.get_version(model, tag), repo.list_tags(model)))


def _oldest_first(refs: Iterable[VersionRef]) -> list[VersionRef]:
    return sorted(refs, key=lambda r: (r.manifest.created_at, r.manifest.tag))


def _histories(repo: Repository, models: Sequence[str]) -> dict[str, list[VersionRef]]:
    """The history (``_history``) of each of ``models``, each manifest read once."""
    keys = [(m, t) for m in models for t in repo.list_tags(m)]
    by_model: dict[str, list[VersionRef]] = {}
    for (model, _), ref in zip(keys, repo.map_parallel(lambda mt: repo.get_version(*mt), keys), strict=True):
        by_model.setdefault(model, []).append(ref)
    return {model: _oldest_first(refs) for model, refs in by_model.items()}


class _Chains:
    """The deltas the policy must know of: the markers (one listing) and, for every blob the
    pairs reach through them, what its header says (the truth: a marker may be stale)."""

    def __init__(self, repo: Repository):
        self.repo = repo
        self.edges = repo.edges.edges()  # base -> dependents
        self.bases_of: dict[str, set[str]] = {}
        for base, dependents in self.edges.items():
            for d in dependents:
                self.bases_of.setdefault(d, set()).add(base)
        self.deltas: dict[str, str] = {}  # dependent -> base, as its header says
        self._read: set[str] = set()

    def learn(self, chunks: Iterable[str]) -> None:
        """Read the headers of the blobs linked to ``chunks`` through markers, both ways."""
        todo = [c for c in chunks if c not in self._read]
        while todo:
            batch = sorted({c for c in todo if c not in self._read})
            self._read.update(batch)
            linked = [c for c in batch if c in self.bases_of or c in self.edges]
            dependents = [c for c in linked if c in self.bases_of]  # only these can be deltas
            found = self.repo.map_parallel(self.repo.delta_base_of, dependents)
            for c, base in zip(dependents, found, strict=True):
                if base is not None:
                    self.deltas[c] = base
            todo = [n for c in linked for n in (*self.bases_of.get(c, ()), *self.edges.get(c, ()))]

    def stale(self) -> list[tuple[str, str]]:
        """(base, dependent) of the markers read that their dependent's header contradicts."""
        return sorted(
            (b, d) for d, bases in self.bases_of.items() if d in self._read for b in bases if self.deltas.get(d) != b
        )


def _sizes(refs: Sequence[VersionRef]) -> dict[str, int]:
    return {d: s for r in refs for f in r.manifest.files for d, s in f.chunks}


#: ``local(digest, size)``: a chunk's raw bytes from a local file, verified by BLAKE3, or None.
LocalChunks = Callable[[str, int], "bytes | None"]


def _check_format(repo: Repository) -> RepoFormat:
    fmt = repo.format()
    if fmt.deltas is None or fmt.tensors is None:
        raise UsageError(
            f"repository {repo.name!r} has storage format {fmt.version}, which stores no deltas",
            "copy its models into a format 3 repository (repo create --format 3, model copy) to delta-code them",
        )
    return fmt


def optimize(
    repo: Repository,
    *,
    models: Sequence[str] | None = None,
    dry_run: bool = False,
    newest_pair_only: bool = False,
    wait: float | None = None,
    progress=None,
) -> OptimizeResult:
    """Re-encode ``models`` (every model when None) of a format 3 repository into delta chains;
    ``newest_pair_only``: only the newest version and the one before, with the simplest rule
    (push's pass). UsageError for a repository of another format."""
    fmt = _check_format(repo)
    result = OptimizeResult(repo.name, dry_run=dry_run)
    progress = progress or NullProgress()
    with leases.acquire(repo, leases.OPTIMIZE, "repo optimize" if not newest_pair_only else "push", wait=wait) as lease:
        chains = _Chains(repo)
        # Every live version's chunks: a delta whose base no version names any more (its version
        # was deleted) moves onto its pair's chunk, and gc can then free the old base.
        names = list(models) if models else repo.list_models()
        # live: every model's, whichever are re-encoded
        histories = {} if newest_pair_only else _histories(repo, repo.list_models() if models else names)
        live = {d for refs in histories.values() for r in refs for f in r.manifest.files for d, _ in f.chunks}
        for model in names:
            history = _history(repo, model)[-2:] if newest_pair_only else histories.get(model, [])
            step = _Step(repo, fmt, chains, result, lease, progress, dry_run=dry_run, simple=newest_pair_only)
            step.run(history, live=live)
            result.models.append(model)
    return result


def reencode_pair(
    repo: Repository,
    older: VersionRef,
    newer: VersionRef,
    *,
    local: LocalChunks | None = None,
    wait: float | None = 0,
    progress=None,
) -> OptimizeResult:
    """Store ``older``'s tensor chunks as deltas against the paired chunks of ``newer``, which
    stay whole (push's pass: the version before, or the one ``--base`` names, against the one
    just pushed; or the version just pushed against ``--base MODEL:TAG``'s base model). With the
    simplest rule (no cuts, no attaching). ``local`` reads chunks from local files before the
    repository. LockHeldError when another re-encoder holds the repository and ``wait`` ends."""
    fmt = _check_format(repo)
    result = OptimizeResult(repo.name)
    with leases.acquire(repo, leases.OPTIMIZE, "push", wait=wait) as lease:
        step = _Step(repo, fmt, _Chains(repo), result, lease, progress or NullProgress(), simple=True, local=local)
        step.run([older, newer])
        result.models.append(older.manifest.model)
    return result


class _Step:
    """One re-encoding of a history (oldest first): plan with the chain policy, store, plan
    again without a declined pair."""

    def __init__(self, repo, fmt, chains, result, lease, progress, *, dry_run=False, simple=False, local=None):
        self.repo, self.fmt, self.chains, self.result = repo, fmt, chains, result
        self.lease, self.progress, self.dry_run, self.simple = lease, progress, dry_run, simple
        self.local = local

    def read(self, digest: str, size: int) -> bytes:
        data = self.local(digest, size) if self.local is not None else None
        return data if data is not None else bytes(self.repo.get_blob(digest, size))

    def run(self, history: Sequence[VersionRef], *, live: Set[str] = frozenset()) -> None:
        if len(history) < 2:
            return
        repo, fmt, chains, result = self.repo, self.fmt, self.chains, self.result
        assert fmt.deltas is not None
        tensors = {
            r.digest: pairing.version_tensors(r.manifest, _layouts(self.read, fmt, r), fmt.tensors) for r in history
        }
        pairs: list[pairing.Pair] = []
        for older, newer in reversed(list(zip(history, history[1:], strict=False))):  # newest pairs first
            pairs.extend(pairing.pair_versions(tensors[older.digest], tensors[newer.digest]))
        result.pairs += len(pairs)
        if not pairs:
            return
        info = {d: (p.size, p.element_size) for p in pairs for d in (p.older, p.newer)}
        chains.learn(info)
        stale = chains.stale()
        if stale and not self.dry_run and not self.simple:
            repo.edges.delete_edges(stale)
            for b, d in stale:
                chains.edges.get(b, set()).discard(d)
                chains.bases_of[d].discard(b)
            result.stale_markers += len(stale)
        own = {d for r in history for f in r.manifest.files for d, _ in f.chunks}
        # The newest stays whole, but for a chunk stored against a live chunk of another model (a
        # fine-tune pushed with --base MODEL:TAG keeps its base model's chunks as bases).
        keep_whole = {
            d
            for t in tensors[history[-1].digest]
            for d, _ in t.chunks
            if not (d in chains.deltas and chains.deltas[d] in live and chains.deltas[d] not in own)
        }
        absent = {b for b in chains.deltas.values() if b not in live} if live else set()
        max_cuts, attach = (0, False) if self.simple else (1, True)
        declined: set[tuple[str, str]] = set()
        while True:
            actions = policy.plan(
                pairs,
                chains.edges,
                chains.deltas,
                fmt.deltas.max_depth,
                keep_whole=keep_whole,
                rebase_from=absent,
                declined=declined,
                max_cuts=max_cuts,
                attach=attach,
            )
            if self.dry_run or not actions:
                result.planned += len(actions)
                return
            self.progress.start("optimize", len(actions))
            refused = _apply(self, actions, info)
            self.progress.close()
            if refused is None:
                return
            declined.add(refused)
            result.declined += 1


def _apply(step: _Step, actions, info) -> tuple[str, str] | None:
    """Store ``actions`` in order; the first declined (chunk, base), or None when all were stored."""
    repo, chains, result, lease, progress = step.repo, step.chains, step.result, step.lease, step.progress
    for action in actions:
        lease.check()
        size, element_size = info.get(action.chunk, (None, 1))
        if size is None:  # a keep_whole chunk that no pair names: its size from its blob
            continue
        data = step.read(action.chunk, size)
        before = repo.stored_size(action.chunk) or 0
        for cut in action.cuts:
            cut_size, cut_element = info[cut]
            repo.put_plain(cut, step.read(cut, cut_size), cut_element)
            _forget(repo, chains, cut)
            result.made_whole += 1
        if action.base is None:
            repo.put_plain(action.chunk, data, element_size)
            _forget(repo, chains, action.chunk)
            result.made_whole += 1
        else:
            plain = before if action.chunk not in chains.deltas else len(repo.format().encode(data, element_size))
            stored = repo.put_delta(action.chunk, data, action.base, step.read(action.base, size), element_size, plain)
            if stored is None:
                return action.chunk, action.base
            _forget(repo, chains, action.chunk, keep=action.base)
            chains.deltas[action.chunk] = action.base
            chains.edges.setdefault(action.base, set()).add(action.chunk)
            chains.bases_of.setdefault(action.chunk, set()).add(action.base)
            result.reencoded += 1
            result.stored_before += before
            result.stored_after += stored
        progress.advance(1)
    return None


def _forget(repo: Repository, chains: _Chains, chunk: str, keep: str | None = None) -> None:
    """``chunk`` is stored in its new form: delete its markers but the one to ``keep``."""
    old = sorted(b for b in chains.bases_of.get(chunk, ()) if b != keep)
    if old:
        repo.edges.delete_edges((b, chunk) for b in old)
    for b in old:
        chains.edges.get(b, set()).discard(chunk)
        chains.bases_of[chunk].discard(b)
    if keep is None:
        chains.deltas.pop(chunk, None)
