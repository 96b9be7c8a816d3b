"""Every error aim_cli raises on purpose. Each class carries its exit code (DESIGN.md section 7)
and a hint: the next step for the user. Only the CLI formats them."""

from __future__ import annotations


class AimError(Exception):
    """Base class. Raised as-is only for a bug: the CLI asks for a report."""

    exit_code = 1
    default_hint = "this is a bug in aim_cli; please report it with the output of `aim_cli -v ...`"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint

    def __str__(self) -> str:
        return self.message


class UsageError(AimError, ValueError):
    """Invalid names, a missing or empty DIR, a refused symlink: the command line must change."""

    exit_code = 2
    default_hint = ""


class NotFoundError(AimError, LookupError):
    """Unknown repository, model or tag."""

    exit_code = 3
    default_hint = ""


class KeyNotFoundError(NotFoundError):
    """A backend has no object under this key. Backends raise it; the store translates it."""

    def __init__(self, key: str):
        super().__init__(f"no object at key {key!r}")
        self.key = key


class ConflictError(AimError):
    """The operation collides with existing state or another process."""

    exit_code = 4
    default_hint = ""


class TagExistsError(ConflictError):
    pass


class LockHeldError(ConflictError):
    pass


class IntegrityError(AimError):
    """Hash mismatch, missing blob, hostile or malformed manifest."""

    exit_code = 5
    default_hint = ""


class StorageError(AimError, OSError):
    """Storage cannot be used: unreachable, no credentials, permission denied, disk full."""

    exit_code = 6
    default_hint = ""


class ConfigError(AimError):
    """No config found, or model_repos.yaml is malformed or invalid."""

    exit_code = 7
    default_hint = ""
