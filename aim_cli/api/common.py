"""What every API function shares: the argument types, the config, opening a repository,
resolving a version; and ``info``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aim_cli import config as cfgmod
from aim_cli.config import Config, RepoConfig
from aim_cli.defaults import DEFAULT_JOBS, DEFAULT_S3_JOBS

if TYPE_CHECKING:
    from aim_cli.repository import Repository, VersionRef

#: Path arguments: a string or any os.PathLike of one.
PathArg = str | os.PathLike[str]
#: ``config=``: a model_repos.yaml path, a loaded Config, or None (the usual search).
ConfigArg = Config | PathArg | None


def get_config(config: ConfigArg = None, *, must_exist: bool = True) -> Config:
    if isinstance(config, Config):
        return config
    return cfgmod.load_config(config, must_exist=must_exist)


def default_jobs(repo_cfg: RepoConfig) -> int:
    """``--jobs`` when not given: on S3 a ceiling the transfers adapt up to (docs/design.md §6)."""
    return DEFAULT_S3_JOBS if repo_cfg.type == "s3" else DEFAULT_JOBS


def open_repository(name: str, *, config: ConfigArg = None, jobs: int | None = None) -> Repository:
    """The repository ``name``; ``jobs`` (default: ``default_jobs``) is its ``jobs``."""
    from aim_cli.backends import open_backend
    from aim_cli.repository import Repository  # the storage format, and all a repository reads with

    repo_cfg = get_config(config).repo(name)
    jobs = default_jobs(repo_cfg) if jobs is None else jobs
    backend = open_backend(repo_cfg, max_connections=jobs)
    backend.begin_access_check()  # the command's first reads go out beside it (docs/design.md §13)
    return Repository(backend, name, jobs=jobs)


@dataclass(frozen=True)
class Info:
    version: str
    config: str | None  # the model_repos.yaml in use, None when none is found
    repos: list[RepoConfig]


def info(*, config: ConfigArg = None) -> Info:
    """The aim_cli version, the config file in use (``config``, else found as the CLI finds it)
    and its repositories. No storage is reached."""
    from aim_cli import __version__

    if isinstance(config, Config):
        return Info(__version__, str(config.path), list(config.repos.values()))
    path = cfgmod.find_config_path(config)
    cfg = cfgmod.load_config(path) if path else None
    return Info(__version__, str(path) if path else None, list(cfg.repos.values()) if cfg else [])


def resolve(repository: Repository, model: str, tag: str | None, digest: str | None) -> VersionRef:
    return repository.resolve_version(model, tag, digest)[0]
