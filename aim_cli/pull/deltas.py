"""Format 3: chunks a pull takes as deltas against chunks it already holds (docs/design.md §6).

Consecutive checkpoints differ in almost every weight, by a little. Format 3 stores the older
version's chunk D as a delta against the newer one's W (the newest stays whole: docs/design.md §3.4): D's blob holds
X = raw(D) XOR raw(W). A pull of W's version into a directory holding D's has raw(D) on disk, so
fetching D's blob, a fraction of W's size, gives raw(W) = raw(D) XOR X, verified by BLAKE3 like
every chunk. The other way round (W's own blob a delta against a chunk held locally) needs
nothing here: the repository asks the pull's local sources for a delta's base before fetching it.

The planner finds the pairs before anything is fetched: for each chunk to fetch, the dependents
the repository records against it (one listing of its edge markers, in parallel), kept if a local
source holds one of them. It asks only when the local sources hold chunks the version does not
name: a cold pull, or a pull whose local chunks are all the version's, makes no such request.
"""

from __future__ import annotations

from collections.abc import Sequence

from aim_cli.pull.sources import LocalFiles


def local_dependents(repo, manifest, to_assemble, local_sources: Sequence[LocalFiles]) -> dict[str, tuple[str, str]]:
    """chunk to fetch -> (a local chunk stored as a delta against it, the name of the local source
    holding it), for the chunks that the files ``to_assemble`` (FilePlans of ``manifest``'s
    files) still miss, that no local source holds, and that have such a delta. Chunks the
    version names are no candidates: they are reused or fetched as themselves."""
    if repo.format().version < 3:
        return {}
    to_fetch = {
        plan.entry.chunks[i][0]
        for plan in to_assemble
        for i in plan.missing()
        if not any(plan.entry.chunks[i][0] in source for source in local_sources)
    }
    wanted = {digest for entry in manifest.files for digest, _ in entry.chunks}
    candidates: dict[str, str] = {}
    for source in local_sources:
        for digest in source.index:
            if digest not in wanted:
                candidates.setdefault(digest, source.name)
    if not to_fetch or not candidates:
        return {}
    ordered = sorted(to_fetch)
    found = repo.map_parallel(repo.edges.dependents_of, ordered)
    pairs = {}
    for digest, dependents in zip(ordered, found, strict=True):
        local = sorted(d for d in dependents if d in candidates)
        if local:
            pairs[digest] = (local[0], candidates[local[0]])
    return pairs
