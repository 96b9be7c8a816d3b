"""Storage backends. ``open_backend`` picks one from a repository's configuration; the S3 module
(and botocore with it) is imported only when an S3 repository is used."""

from __future__ import annotations

from aim_cli.backends.base import Backend, ObjectInfo

__all__ = ["Backend", "ObjectInfo", "open_backend"]


def open_backend(repo, *, max_connections: int = 16) -> Backend:
    """Return the Backend for a ``config.RepoConfig``. ``max_connections`` sizes the S3
    connection pool so that ``--jobs`` parallel transfers never wait for a connection."""
    if repo.type == "local":
        from aim_cli.backends.local import LocalBackend

        return LocalBackend(repo.path)
    if repo.type == "s3":
        from aim_cli.backends.s3.backend import S3Backend

        return S3Backend.from_config(repo, max_connections=max_connections)
    raise ValueError(f"unknown repository type {repo.type!r}")
