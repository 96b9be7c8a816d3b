"""The repository layer: ``Repository`` (facade.py) over its role modules, and leases.

``from aim_cli.repository import Repository, VersionRef, CommitResult, Deleted``. They are
imported on first use: a package __init__ stays light (the storage format brings zstandard).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aim_cli.repository.deletion import Deleted
    from aim_cli.repository.facade import Repository
    from aim_cli.repository.versions import CommitResult, VersionRef

__all__ = ["CommitResult", "Deleted", "Repository", "VersionRef"]

_HOMES = {"CommitResult": "versions", "Deleted": "deletion", "Repository": "facade", "VersionRef": "versions"}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
