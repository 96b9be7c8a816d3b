"""Repositories in model_repos.yaml: create (and initialise the storage), delete the entry."""

from __future__ import annotations

import os
from dataclasses import dataclass

from aim_cli import config as cfgmod
from aim_cli.api.common import ConfigArg, get_config
from aim_cli.backends import open_backend
from aim_cli.chunking.cdc import ChunkingParams
from aim_cli.config import RepoConfig
from aim_cli.errors import ConfigError, UsageError
from aim_cli.format.repo_format import DEFAULT_FORMAT, KNOWN_FORMATS
from aim_cli.names import check_name
from aim_cli.repository import Repository


# -- repositories -----------------------------------------------------------------------------------
def create_repo(
    name: str,
    repo_type: str,
    path: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    profile: str | None = None,
    addressing_style: str | None = None,
    chunk_size: int | None = None,
    storage_format: int | None = None,
    check: bool = True,
    config: ConfigArg = None,
) -> RepoCreated:
    """Record the repository in model_repos.yaml (created if needed) and, when the storage can be
    reached (not with ``check=False``), write its aim-repo.json: ``storage_format`` 1 or 2 (the
    default, DEFAULT_FORMAT), or keep the one already there."""
    check_name("repository", name)
    if storage_format is not None and storage_format not in KNOWN_FORMATS:
        raise UsageError(
            f"--format {storage_format} is not a storage format this aim_cli writes",
            f"choose one of {', '.join(map(str, KNOWN_FORMATS))}",
        )
    if not check and (chunk_size or storage_format is not None):
        # With --no-check the first push writes aim-repo.json, with the defaults: they would be lost.
        raise UsageError(
            "--chunk-size and --format need the storage, which --no-check does not reach",
            "drop --no-check (or create the repository when its storage is reachable)",
        )
    cfg = get_config(config, must_exist=False)
    cfgmod.check_unused(cfg, name)  # before touching any storage
    params = None
    if chunk_size:
        try:
            params = ChunkingParams.for_average(chunk_size).validate()
        except ValueError:
            raise UsageError(
                f"--chunk-size {chunk_size} is out of range",
                "choose an average chunk size from 1KiB to 4MiB, e.g. 512KiB or 1MiB",
            ) from None
    if repo_type == "local" and not os.path.isabs(os.path.expanduser(path)):
        # Typed relative to the current directory; recorded relative to the config file, which
        # is how every later command (run from anywhere) resolves it.
        path = os.path.relpath(os.path.abspath(path), cfg.path.parent)
    raw = {"type": repo_type, "path": path}
    for key, value in (
        ("region", region),
        ("endpoint_url", endpoint_url),
        ("profile", profile),
        ("addressing_style", addressing_style),
    ):
        if value:
            raw[key] = value
    try:
        entry = cfgmod.parse_entry(cfg.path, name, raw, where=f"repository {name!r}")
    except ConfigError as e:  # the values came from the command line: it must change (exit 2)
        raise UsageError(e.message, e.hint) from None
    found_format = None
    if check:
        backend = open_backend(entry)
        backend.check_access()  # StorageError: nothing is written to the config
        repo = Repository(backend, name)
        repo.init(params, version=storage_format or DEFAULT_FORMAT)
        repo.check_conditional_writes()
        found_format = repo.format().version
    cfgmod.add_repo(cfg, entry, path)
    return RepoCreated(entry, found_format is not None, found_format)


@dataclass(frozen=True)
class RepoCreated:
    entry: RepoConfig
    initialised: bool  # its storage was reached and holds aim-repo.json (False with check=False)
    format: int | None  # the storage format it holds (an existing repository keeps its own)


def delete_repo(name: str, *, config: ConfigArg = None) -> RepoConfig:
    """Remove the config entry only; the stored data is not touched."""
    return cfgmod.remove_repo(get_config(config), name)
