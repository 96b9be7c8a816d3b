"""Repositories in model_repos.yaml: create (and initialise the storage), delete the entry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aim_cli import config as cfgmod
from aim_cli.api.common import ConfigArg, get_config
from aim_cli.config import RepoConfig
from aim_cli.errors import ConfigError, ConflictError, UsageError
from aim_cli.names import check_name

if TYPE_CHECKING:  # create_repo imports the storage layers; delete_repo edits the config alone
    from aim_cli.chunking.cdc import ChunkingParams
    from aim_cli.repository import Repository

#: The range of `repo create --chunk-size` (the average chunk size): 1 KiB to 4 MiB.
MIN_CHUNK_SIZE, MAX_AVG_CHUNK_SIZE = 1 << 10, 4 << 20


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
    parents: bool = False,
    config: ConfigArg = None,
) -> RepoCreated:
    """Record the repository in model_repos.yaml (created if needed) and, when the storage can be
    reached (not with ``check=False``), write its aim-repo.json: ``storage_format`` 1, 2 or 3
    (default DEFAULT_FORMAT), or keep the one already there. A local directory whose parent does
    not exist is refused (UsageError) unless ``parents``: it is created with its missing parents."""
    from aim_cli.backends import open_backend
    from aim_cli.format.repo_format import DEFAULT_FORMAT, KNOWN_FORMATS
    from aim_cli.repository import Repository

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
    params = _chunking_params(chunk_size) if chunk_size else None
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
    found_format, existed = None, False
    if check and entry.type == "local" and not parents:
        _check_parent_exists(entry.path)
    if check:
        backend = open_backend(entry)
        backend.check_access()  # StorageError: nothing is written to the config
        repo = Repository(backend, name)
        existed = repo.exists()
        repo.init(params, version=storage_format or DEFAULT_FORMAT)
        repo.check_conditional_writes()
        found_format = repo.format().version
        if existed:  # nothing is written to the config when the stored values disagree
            _check_agrees(repo, entry.path, chunk_size, storage_format)
    cfgmod.add_repo(cfg, entry, path)
    return RepoCreated(entry, found_format is not None, found_format, existed)


def _chunking_params(chunk_size: int) -> ChunkingParams:
    """The chunking of a new repository of average chunk size ``chunk_size``, in range or refused."""
    from aim_cli.chunking.cdc import ChunkingParams

    out_of_range = UsageError(
        f"--chunk-size {chunk_size} is out of range",
        "choose an average chunk size from 1KiB to 4MiB, e.g. 512KiB or 1MiB",
    )
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_AVG_CHUNK_SIZE:  # what the hint promises
        raise out_of_range
    try:
        return ChunkingParams.for_average(chunk_size).validate()
    except ValueError:
        raise out_of_range from None


def _check_parent_exists(path: str) -> None:
    """A mistyped mount point (/mnt/nsf/models) must not quietly become a repository on the
    local disk: the directory may be new, its parent must already be there."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.lexists(path) and not os.path.isdir(parent):
        raise UsageError(
            f"the parent directory {parent} of the repository path {path} does not exist",
            "check the path (is the share mounted?), or pass --parents to create it with its parents",
        )


def _check_agrees(repo: Repository, where: str, chunk_size: int | None, storage_format: int | None) -> None:
    """Refuse options that disagree with the repository already at ``where`` (exit 4). An option
    left out never conflicts: it means "what the repository has"."""
    fmt, avg = repo.format().version, repo.params().avg_size
    wrong = []
    if storage_format is not None and storage_format != fmt:
        wrong.append(f"--format {storage_format}")
    if chunk_size and chunk_size != avg:
        wrong.append(f"--chunk-size {chunk_size}")
    if wrong:
        raise ConflictError(
            f"{where} already holds a repository of format {fmt} with an average chunk size of {avg} bytes, "
            f"not {' and '.join(wrong)}",
            "drop the options to use it as it is, or choose another path for a new repository",
        )


@dataclass(frozen=True)
class RepoCreated:
    entry: RepoConfig
    initialised: bool  # its storage was reached and holds aim-repo.json (False with check=False)
    format: int | None  # the storage format it holds (an existing repository keeps its own)
    existing: bool = False  # the storage already held a repository (its values agree with the options)


def delete_repo(name: str, *, config: ConfigArg = None) -> RepoConfig:
    """Remove the config entry only; the stored data is not touched."""
    return cfgmod.remove_repo(get_config(config), name)
