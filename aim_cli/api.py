"""The public Python API: what the CLI calls, and what users call from their own code.

    import aim_cli.api as aim
    result = aim.push("local", "resnet50", "./checkpoint", tag="v1.0")
    aim.pull("local", "resnet50", "./models/resnet50", tag="v1.0")

``config`` is a path to a model_repos.yaml, a loaded ``Config``, or None (the usual search:
$AIM_CONFIG, then model_repos.yaml in the current directory or its parents).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from aim_cli import config as cfgmod
from aim_cli.backends import open_backend
from aim_cli.chunking import ChunkingParams
from aim_cli.config import Config, RepoConfig, check_name
from aim_cli.pull import PullResult
from aim_cli.push import PushResult
from aim_cli.store import Repository, VersionRef

DEFAULT_JOBS = 8

__all__ = [
    "DEFAULT_JOBS", "PullResult", "PushResult", "VersionInfo", "create_repo", "delete_model",
    "delete_repo", "delete_version", "get_config", "list_models", "list_versions", "open_repository",
    "pull", "push",
]


def get_config(config: Config | str | os.PathLike | None = None, *, must_exist: bool = True) -> Config:
    if isinstance(config, Config):
        return config
    return cfgmod.load_config(config, must_exist=must_exist)


def open_repository(name: str, *, config=None, jobs: int = DEFAULT_JOBS) -> Repository:
    repo_cfg = get_config(config).repo(name)
    backend = open_backend(repo_cfg, max_connections=jobs)
    backend.check_access()
    return Repository(backend, name, jobs=jobs)


# -- repositories -----------------------------------------------------------------------------------
def create_repo(name: str, repo_type: str, path: str, *, region: str | None = None,
                endpoint_url: str | None = None, profile: str | None = None,
                addressing_style: str | None = None, chunk_size: int | None = None,
                check: bool = True, config=None) -> tuple[RepoConfig, bool]:
    """Record the repository in model_repos.yaml (created if needed) and, when the storage can be
    reached, write its aim-repo.json. Returns (entry, initialised)."""
    check_name("repository", name)
    cfg = get_config(config, must_exist=False)
    params = ChunkingParams.for_average(chunk_size).validate() if chunk_size else None
    raw = {"type": repo_type, "path": path}
    for key, value in (("region", region), ("endpoint_url", endpoint_url), ("profile", profile),
                       ("addressing_style", addressing_style)):
        if value:
            raw[key] = value
    entry = cfgmod.parse_entry(cfg.path, name, raw)
    initialised = False
    if check:
        backend = open_backend(entry)
        backend.check_access()  # StorageError: nothing is written to the config
        repo = Repository(backend, name)
        repo.init(params)
        initialised = True
    cfgmod.add_repo(cfg, entry, path)
    return entry, initialised


def delete_repo(name: str, *, config=None) -> RepoConfig:
    """Remove the config entry only; the stored data is not touched."""
    return cfgmod.remove_repo(get_config(config), name)


# -- models and versions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionInfo:
    model: str
    tag: str
    digest: str
    created_at: str
    created_by: str
    message: str
    total_size: int
    files: int

    @classmethod
    def from_ref(cls, ref: VersionRef) -> "VersionInfo":
        m = ref.manifest
        return cls(m.model, m.tag, ref.digest, m.created_at, m.created_by, m.message, m.total_size, len(m.files))


def list_models(repo: str, *, config=None) -> list[str]:
    return open_repository(repo, config=config).list_models()


def list_versions(repo: str, model: str, *, config=None) -> list[VersionInfo]:
    """Oldest first."""
    return [VersionInfo.from_ref(r) for r in open_repository(repo, config=config).list_versions(model)]


def delete_version(repo: str, model: str, tag: str, *, config=None) -> VersionInfo:
    return VersionInfo.from_ref(open_repository(repo, config=config).delete_version(model, tag))


def delete_model(repo: str, model: str, *, config=None) -> list[str]:
    return open_repository(repo, config=config).delete_model(model)


# -- transfers ---------------------------------------------------------------------------------------
def push(repo: str, model: str, source: str | os.PathLike, *, tag: str, message: str = "",
         jobs: int = DEFAULT_JOBS, follow_symlinks: bool = False, config=None, progress=None) -> PushResult:
    from aim_cli import push as pushmod

    repository = open_repository(repo, config=config, jobs=jobs)
    return pushmod.push(repository, model, tag, source, message=message, jobs=jobs,
                        follow_symlinks=follow_symlinks, progress=progress)


def pull(repo: str, model: str, dest: str | os.PathLike, *, tag: str | None = None, digest: str | None = None,
         jobs: int = DEFAULT_JOBS, references: Sequence[str | os.PathLike] = (), cache_dir=None,
         config=None, progress=None) -> PullResult:
    from aim_cli import pull as pullmod

    repository = open_repository(repo, config=config, jobs=jobs)
    cache = None
    if cache_dir:
        from aim_cli.cache import ChunkCache

        cache = ChunkCache(cache_dir)
    return pullmod.pull(repository, model, dest, tag=tag, digest=digest, jobs=jobs, references=references,
                        cache=cache, progress=progress)

