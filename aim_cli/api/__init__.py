"""The public Python API: what the CLI calls, and what users call from their own code.

    import aim_cli.api as aim
    result = aim.push("local", "resnet50", "./checkpoint", tag="v1.0")
    aim.pull("local", "resnet50", "./models/resnet50", tag="v1.0")

``config`` is a path to a model_repos.yaml, a loaded ``Config``, or None (the usual search:
$AIM_CONFIG, then model_repos.yaml in the current directory or its parents).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aim_cli.api.aliases import (
        AliasHistory,
        AliasInfo,
        AliasSetResult,
        AliasStatementInfo,
        alias_delete,
        alias_history,
        alias_list,
        alias_set,
    )
    from aim_cli.api.cache import cache_info, cache_prune
    from aim_cli.api.common import ConfigArg, Info, PathArg, get_config, info, open_repository
    from aim_cli.api.repos import RepoCreated, create_repo, delete_repo
    from aim_cli.api.signatures import ExportResult, export_signature, list_signatures, sign_version, verify_signature
    from aim_cli.api.transfers import copy, diff, plan_pull, pull, push
    from aim_cli.api.versions import (
        DeleteResult,
        FileInfo,
        VersionDetails,
        VersionInfo,
        check_repo,
        collect_garbage,
        delete_versions,
        list_models,
        list_tags,
        list_versions,
        optimize_repo,
        verify_local,
        verify_version,
        version_details,
    )
    from aim_cli.audit.check import CheckReport
    from aim_cli.audit.gc import GcPlan, GcResult
    from aim_cli.audit.verify import LocalReport, VersionReport
    from aim_cli.config import Config, RepoConfig
    from aim_cli.copy import CopyResult
    from aim_cli.defaults import DEFAULT_JOBS, DEFAULT_S3_JOBS
    from aim_cli.diff import DiffResult
    from aim_cli.optimize import OptimizeResult
    from aim_cli.progress import Progress
    from aim_cli.pull.cache import CacheInfo, PruneResult
    from aim_cli.pull.pipeline import PullResult
    from aim_cli.pull.plan import PullPlan
    from aim_cli.push import PushResult
    from aim_cli.push_plan import PushPlan
    from aim_cli.repository import Repository, VersionRef
    from aim_cli.signing.bundle import SignatureInfo
    from aim_cli.signing.sign import SignResult
    from aim_cli.signing.verify import VerifyResult

# Every name is imported on first use, from the module that defines it (docs/design.md §13): a
# command loads only what it calls (`model list` neither the pull pipeline nor push nor signing),
# and `import aim_cli.api` costs nothing. `from aim_cli.api import pull` works as before.
_HOMES = {
    "aim_cli.api.aliases": (
        "AliasHistory",
        "AliasInfo",
        "AliasSetResult",
        "AliasStatementInfo",
        "alias_delete",
        "alias_history",
        "alias_list",
        "alias_set",
    ),
    "aim_cli.api.cache": ("cache_info", "cache_prune"),
    "aim_cli.api.common": ("ConfigArg", "Info", "PathArg", "get_config", "info", "open_repository"),
    "aim_cli.api.repos": ("RepoCreated", "create_repo", "delete_repo"),
    "aim_cli.api.signatures": (
        "ExportResult",
        "export_signature",
        "list_signatures",
        "sign_version",
        "verify_signature",
    ),
    "aim_cli.api.transfers": ("copy", "diff", "plan_pull", "pull", "push"),
    "aim_cli.api.versions": (
        "DeleteResult",
        "FileInfo",
        "VersionDetails",
        "VersionInfo",
        "check_repo",
        "collect_garbage",
        "delete_versions",
        "list_models",
        "list_tags",
        "list_versions",
        "optimize_repo",
        "optimize_repo",
        "verify_local",
        "verify_version",
        "version_details",
    ),
    "aim_cli.audit.check": ("CheckReport",),
    "aim_cli.audit.gc": ("GcPlan", "GcResult"),
    "aim_cli.audit.verify": ("LocalReport", "VersionReport"),
    "aim_cli.config": ("Config", "RepoConfig"),
    "aim_cli.copy": ("CopyResult",),
    "aim_cli.defaults": ("DEFAULT_JOBS", "DEFAULT_S3_JOBS"),
    "aim_cli.diff": ("DiffResult",),
    "aim_cli.optimize": ("OptimizeResult",),
    "aim_cli.progress": ("Progress",),
    "aim_cli.pull.cache": ("CacheInfo", "PruneResult"),
    "aim_cli.pull.pipeline": ("PullResult",),
    "aim_cli.pull.plan": ("PullPlan",),
    "aim_cli.push": ("PushResult",),
    "aim_cli.push_plan": ("PushPlan",),
    "aim_cli.repository": ("Repository", "VersionRef"),
    "aim_cli.signing.bundle": ("SignatureInfo",),
    "aim_cli.signing.sign": ("SignResult",),
    "aim_cli.signing.verify": ("VerifyResult",),
}
_LAZY = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DEFAULT_JOBS",
    "DEFAULT_S3_JOBS",
    "AliasHistory",
    "AliasInfo",
    "AliasSetResult",
    "AliasStatementInfo",
    "CacheInfo",
    "CheckReport",
    "Config",
    "ConfigArg",
    "CopyResult",
    "DeleteResult",
    "DiffResult",
    "ExportResult",
    "FileInfo",
    "GcPlan",
    "GcResult",
    "Info",
    "LocalReport",
    "OptimizeResult",
    "PathArg",
    "Progress",
    "PruneResult",
    "PullPlan",
    "PullResult",
    "PushPlan",
    "PushResult",
    "RepoConfig",
    "RepoCreated",
    "Repository",
    "SignResult",
    "SignatureInfo",
    "VerifyResult",
    "VersionDetails",
    "VersionInfo",
    "VersionRef",
    "VersionReport",
    "alias_delete",
    "alias_history",
    "alias_list",
    "alias_set",
    "cache_info",
    "cache_prune",
    "check_repo",
    "collect_garbage",
    "copy",
    "create_repo",
    "delete_repo",
    "delete_versions",
    "diff",
    "export_signature",
    "get_config",
    "info",
    "list_models",
    "list_signatures",
    "list_tags",
    "list_versions",
    "open_repository",
    "optimize_repo",
    "plan_pull",
    "pull",
    "push",
    "sign_version",
    "verify_local",
    "verify_signature",
    "verify_version",
    "version_details",
]
