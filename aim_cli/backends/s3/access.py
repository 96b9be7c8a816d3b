"""The access check of an S3 backend, sent beside a command's first requests rather than a round
trip before them (``AccessChecked.begin_access_check``; docs/design.md §13).

Every command checks its location first: the bucket exists, the credentials are accepted, the
prefix may be listed (``S3Backend.check_access``, a one-key listing). Sent and waited for, that
check cost every command a round trip before its first useful request. Here it goes out on a
thread of its own, and each method of the backend says what it may do meanwhile:

- a ``read`` is sent at once, and its answer, or its failure, counts only once the check has
  passed: the check's failure comes first. So a HEAD answered 404 by a missing bucket never reads
  as a missing key, and every message names the check, as it did;
- a ``write`` (a delete too) waits for the check before it is sent: a location that fails its
  check gets nothing written.

Once failed, the check's failure is what every later call raises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial, wraps
from typing import Concatenate, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
B = TypeVar("B", bound="AccessChecked")


class AccessChecked:
    """What an S3 backend's methods need of its access check (a mixin of ``S3Backend``)."""

    _access: Future[None] | None = None  # a check still out, or failed

    def check_access(self) -> None:
        raise NotImplementedError

    def begin_access_check(self) -> None:
        """``check_access`` without waiting for its answer: sent now, on a thread of its own."""
        access: Future[None] = Future()

        def check() -> None:
            try:
                self.check_access()
            except BaseException as e:  # the backend's next call raises it
                access.set_exception(e)
            else:
                access.set_result(None)

        self._access = access
        threading.Thread(target=check, name="aim-s3-access", daemon=True).start()

    def _access_checked(self) -> None:
        """Wait for a check still out; raise its failure."""
        access = self._access
        if access is not None:
            access.result()
            self._access = None

    def _after_access(self, call: Callable[[], R]) -> R:
        """``call`` (a read), then the check still out, whose failure comes first. An interrupt
        (Ctrl-C) does not wait for the check."""
        if self._access is None:
            return call()
        try:
            result = call()
        except Exception:
            self._access_checked()
            raise
        self._access_checked()
        return result


def read(method: Callable[Concatenate[B, P], R]) -> Callable[Concatenate[B, P], R]:
    """A read: sent while the access check may still be out; its outcome counts after the check's."""

    @wraps(method)
    def reading(self: B, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._after_access(partial(method, self, *args, **kwargs))

    return reading


def write(method: Callable[Concatenate[B, P], R]) -> Callable[Concatenate[B, P], R]:
    """A write or a delete: sent only once the access check has passed."""

    @wraps(method)
    def writing(self: B, /, *args: P.args, **kwargs: P.kwargs) -> R:
        self._access_checked()
        return method(self, *args, **kwargs)

    return writing
