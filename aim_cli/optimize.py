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
from collections.abc import Iterable, Sequence
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


def _layouts(repo: Repository, fmt: RepoFormat, ref: VersionRef) -> dict:
    """path -> safetensors layout of each file of ``ref`` cut by its layout (pairing.py)."""
    assert fmt.tensors is not None
    out = {}
    for entry in ref.manifest.files:
        if not entry.path.endswith(SAFETENSORS_SUFFIX) or not entry.chunks:
            continue
        head = bytes(repo.get_blob(*entry.chunks[0], context=f"{ref.manifest.model}:{ref.manifest.tag}/{entry.path}"))
        end = pairing.header_end(head[:8], entry.size, fmt.chunking, fmt.tensors)
        if end is None:
            continue
        if end > len(head):
            refs = pairing.head_chunks(entry, end)
            head = b"".join(bytes(repo.get_blob(d, s)) for d, s in refs)
        layout = pairing.parse_layout(head, entry.size, fmt.chunking, fmt.tensors)
        if layout is not None:
            out[entry.path] = layout
    return out


def _history(repo: Repository, model: str) -> list[VersionRef]:
    """The versions of ``model``, oldest first by their manifests' ``created_at`` (then tag)."""
    refs = repo.map_parallel(lambda tag: repo.get_version(model, tag), repo.list_tags(model))
    return sorted(refs, key=lambda r: (r.manifest.created_at, r.manifest.tag))


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
    fmt = repo.format()
    if fmt.deltas is None or fmt.tensors is None:
        raise UsageError(
            f"repository {repo.name!r} has storage format {fmt.version}, which stores no deltas",
            "copy its models into a format 3 repository (repo create --format 3, model copy) to delta-code them",
        )
    result = OptimizeResult(repo.name, dry_run=dry_run)
    progress = progress or NullProgress()
    names = list(models) if models else repo.list_models()
    with leases.acquire(repo, leases.OPTIMIZE, "repo optimize" if not newest_pair_only else "push", wait=wait) as lease:
        chains = _Chains(repo)
        for model in names:
            _optimize_model(repo, fmt, model, chains, result, dry_run, newest_pair_only, lease, progress)
            result.models.append(model)
    return result


def _optimize_model(repo, fmt, model, chains, result, dry_run, newest_pair_only, lease, progress) -> None:
    history = _history(repo, model)
    if newest_pair_only:
        history = history[-2:]
    if len(history) < 2:
        return
    tensors = {r.digest: pairing.version_tensors(r.manifest, _layouts(repo, fmt, r), fmt.tensors) for r in history}
    pairs: list[pairing.Pair] = []
    for older, newer in reversed(list(zip(history, history[1:], strict=False))):  # newest pairs first
        pairs.extend(pairing.pair_versions(tensors[older.digest], tensors[newer.digest]))
    result.pairs += len(pairs)
    if not pairs:
        return
    info = {d: (p.size, p.element_size) for p in pairs for d in (p.older, p.newer)}
    chains.learn(info)
    stale = chains.stale()
    if stale and not dry_run and not newest_pair_only:
        repo.edges.delete_edges(stale)
        for b, d in stale:
            chains.edges.get(b, set()).discard(d)
            chains.bases_of[d].discard(b)
        result.stale_markers += len(stale)
    keep_whole = {d for t in tensors[history[-1].digest] for d, _ in t.chunks}
    max_cuts, attach = (0, False) if newest_pair_only else (1, True)
    declined: set[tuple[str, str]] = set()
    while True:
        actions = policy.plan(
            pairs,
            chains.edges,
            chains.deltas,
            fmt.deltas.max_depth,
            keep_whole=keep_whole,
            declined=declined,
            max_cuts=max_cuts,
            attach=attach,
        )
        if dry_run or not actions:
            result.planned += len(actions)
            return
        progress.start("optimize", len(actions))
        refused = _apply(repo, actions, info, chains, result, lease, progress)
        progress.close()
        if refused is None:
            return
        declined.add(refused)
        result.declined += 1


def _apply(repo, actions, info, chains, result, lease, progress) -> tuple[str, str] | None:
    """Store ``actions`` in order; the first declined (chunk, base), or None when all were stored."""
    for action in actions:
        lease.check()
        size, element_size = info.get(action.chunk, (None, 1))
        if size is None:  # a keep_whole chunk that no pair names: its size from its blob
            continue
        data = repo.get_blob(action.chunk, size)
        before = repo.stored_size(action.chunk) or 0
        for cut in action.cuts:
            cut_size, cut_element = info[cut]
            repo.put_plain(cut, repo.get_blob(cut, cut_size), cut_element)
            _forget(repo, chains, cut)
            result.made_whole += 1
        if action.base is None:
            repo.put_plain(action.chunk, data, element_size)
            _forget(repo, chains, action.chunk)
            result.made_whole += 1
        else:
            plain = before if action.chunk not in chains.deltas else len(repo.format().encode(data, element_size))
            stored = repo.put_delta(
                action.chunk, data, action.base, repo.get_blob(action.base, size), element_size, plain
            )
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
