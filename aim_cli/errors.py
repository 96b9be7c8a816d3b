"""Every error aim_cli raises on purpose. Each class carries its exit code (docs/design.md §11)
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


class VersionNotFoundError(NotFoundError):
    """No such model, or no such version of it. ``tag`` is None when the whole model is unknown."""

    def __init__(self, message: str, hint: str | None = None, *, model: str, tag: str | None = None):
        super().__init__(message, hint)
        self.model = model
        self.tag = tag


class NotARepositoryError(NotFoundError):
    """A path that holds no repository (no aim-repo.json) where one is required (gc, check)."""

    def __init__(self, message: str, hint: str | None = None, *, location: str):
        super().__init__(message, hint)
        self.location = location


class ConflictError(AimError):
    """The operation collides with existing state or another process."""

    exit_code = 4
    default_hint = ""


class TagExistsError(ConflictError):
    pass


class LockHeldError(ConflictError):
    pass


class AliasMovedError(ConflictError):
    """Another writer changed the alias first (docs/design.md §2.1). ``current_tag`` and
    ``current_digest`` say what it is now (None: unset), ``index`` the entry that won."""

    def __init__(
        self, message: str, hint: str | None = None, *, current_tag: str | None, current_digest: str | None, index: int
    ):
        super().__init__(message, hint)
        self.current_tag = current_tag
        self.current_digest = current_digest
        self.index = index


class NotEmptyError(ConflictError):
    """A new repository's root holds data that is not a repository, or repositories would nest."""

    def __init__(self, message: str, hint: str | None = None, *, location: str):
        super().__init__(message, hint)
        self.location = location


class IntegrityError(AimError):
    """Hash mismatch, missing blob, hostile or malformed manifest."""

    exit_code = 5
    default_hint = ""


class BlobMissingError(IntegrityError):
    """A blob a version names is not stored."""

    def __init__(self, message: str, hint: str | None = None, *, digest: str):
        super().__init__(message, hint)
        self.digest = digest


class BlobCorruptError(IntegrityError):
    """A stored blob whose bytes do not match its digest, or whose size is not the expected one,
    or that does not decode (format 2). ``reason`` says which, for reports that list many."""

    def __init__(self, message: str, hint: str | None = None, *, digest: str, reason: str = ""):
        super().__init__(message, hint)
        self.digest = digest
        self.reason = reason


class ObjectTooLargeError(IntegrityError):
    """A stored object larger than the reader's bound: refused without being read whole.
    Backends raise it (``get(key, max_size)``); the store names the blob or manifest."""

    def __init__(self, key: str, limit: int):
        super().__init__(f"object at key {key!r} is larger than the {limit} bytes expected")
        self.key = key
        self.limit = limit


class DamagedStorageError(IntegrityError):
    """Something under a repository's root that aim_cli never writes: a symlink, a stray name
    under ``versions/``. Listing and reading refuse it alike, naming ``key``."""

    def __init__(self, message: str, hint: str | None = None, *, key: str):
        super().__init__(message, hint)
        self.key = key


class StorageError(AimError, OSError):
    """Storage cannot be used: unreachable, no credentials, permission denied, disk full."""

    exit_code = 6
    default_hint = ""


class ConfigError(AimError):
    """No config found, or model_repos.yaml is malformed or invalid."""

    exit_code = 7
    default_hint = ""
