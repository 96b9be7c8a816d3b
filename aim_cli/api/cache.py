"""The local chunk cache: what it holds, and pruning it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aim_cli.api.common import PathArg

if TYPE_CHECKING:
    from aim_cli.pull.cache import CacheInfo, PruneResult


# -- the chunk cache ---------------------------------------------------------------------------------
def cache_info(cache_dir: PathArg) -> CacheInfo:
    """(entries, bytes) of the chunk cache at ``cache_dir`` (an ``aim_cli.pull.cache.CacheInfo``)."""
    from aim_cli.pull.cache import ChunkCache

    return ChunkCache(cache_dir).info()


def cache_prune(cache_dir: PathArg, max_size: int = 0, *, dry_run: bool = False) -> PruneResult:
    """Delete the least recently used chunks until the cache holds at most ``max_size`` bytes
    (0 empties it). Returns an ``aim_cli.pull.cache.PruneResult`` (removed, freed, entries, bytes)."""
    from aim_cli.pull.cache import ChunkCache

    return ChunkCache(cache_dir).prune(max_size, dry_run=dry_run)
