"""Fakes that inject faults into real parts, in one place: backends that wrap a real backend
(counting, hooking a step of a protocol, failing on a schedule), a clock tests can move, and an
HTTP proxy in front of a real S3 server that cuts, stalls or garbles its answers. Tests wrap real
things with these; nothing here patches boto3 or sleeps to synchronise."""

from __future__ import annotations

import fnmatch
import http.client
import random
import select
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from aim_cli.backends.base import ObjectInfo
from aim_cli.errors import ObjectTooLargeError, StorageError


# -- backend wrappers and clocks --------------------------------------------------------------
class CountingBackend:
    """Delegates to a real backend; counts gets of blobs (and the bytes they return; ``got``
    lists their keys) and can fail the get number ``fail_after`` + 1 onwards, to simulate a
    pull cut off midway."""

    def __init__(self, inner, fail_after: int | None = None):
        self.inner = inner
        self.location = inner.location
        self.gets = 0
        self.get_bytes = 0
        self.got: list[str] = []
        self.fail_after = fail_after
        self._lock = threading.Lock()

    def get(self, key, max_size=None):
        with self._lock:
            if key.startswith("blobs/"):
                if self.fail_after is not None and self.gets >= self.fail_after:
                    raise ConnectionAbortedError("injected: link dropped")
                self.gets += 1
        data = self.inner.get(key, max_size)
        if key.startswith("blobs/"):
            with self._lock:
                self.get_bytes += len(data)
                self.got.append(key)
        return data

    def get_once(self, key, max_size=None):  # counted as a get: the same read, any bytes-like back
        return self.get(key, max_size)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class HookedBackend:
    """Delegates to a real backend and calls ``before(op, key)`` before, ``after(op, key)`` after
    every get, put, exists and delete (``op`` is the method's name): a test runs another
    process's step at an exact point of a protocol, with no sleeps."""

    def __init__(self, inner, before=None, after=None):
        self.inner = inner
        self.location = inner.location
        self.before = before or (lambda op, key: None)
        self.after = after or (lambda op, key: None)

    def _call(self, op: str, key: str, *args):
        self.before(op, key)
        result = getattr(self.inner, op)(key, *args)
        self.after(op, key)
        return result

    def get(self, key, max_size=None):
        return self._call("get", key, max_size)

    def get_once(self, key, max_size=None):
        return self._call("get", key, max_size)

    def put(self, key, data, *, hedge=True, durable=False):
        self.before("put", key)
        result = self.inner.put(key, data, hedge=hedge, durable=durable)
        self.after("put", key)
        return result

    def exists(self, key):
        return self._call("exists", key)

    def delete(self, key):
        return self._call("delete", key)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class FakeClock:
    """A wall clock and a monotonic clock that move only when told (``advance``)."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- a fault-injecting backend (like kopia's blobtesting and restic's test backends) ------------
@dataclass
class Fault:
    """One fault to inject. It strikes the calls of Backend method ``op`` ("get", "put",
    "put_if_absent", "exists", "size", "list", "delete", "delete_many", or "*" for any) whose key
    matches the fnmatch ``pattern`` (for "list": the prefix; for "delete_many": its first key),
    numbers ``nth`` to ``nth + times - 1`` of them (1-based; ``times=None``: every one from ``nth``).

    ``kind``:
      "storage"     raise StorageError (what a backend raises for a failing storage)
      "connection"  raise ConnectionResetError (an error a backend failed to map)
      "short"       get returns the object without its last byte
      "long"        get returns the object plus ``arg`` (default 1) zero bytes, ignoring max_size:
                    a backend that breaks the bounded-read contract
      "too_large"   get raises ObjectTooLargeError, as a backend does past max_size
      "corrupt"     get returns the object with one bit of its first byte flipped
      "miss"        list leaves out the entries whose key matches the fnmatch ``arg``
      "extra"       list adds an entry (size 1) for each key in ``arg`` that starts with the prefix
    """

    op: str
    kind: str
    pattern: str = "*"
    nth: int = 1
    times: int | None = 1
    arg: object = None
    hits: int = 0  # matching calls seen so far

    def strikes(self, op: str, key: str) -> bool:
        if self.op not in (op, "*") or not fnmatch.fnmatchcase(key, self.pattern):
            return False
        self.hits += 1
        return self.hits >= self.nth and (self.times is None or self.hits < self.nth + self.times)


class FaultyBackend:
    """Wraps any Backend and injects ``faults`` (see Fault). Records every call as (op, key,
    max_size) in ``calls``; ``struck`` lists the faults that fired as (op, key, kind)."""

    def __init__(self, inner, *faults: Fault):
        self.inner = inner
        self.location = inner.location
        self.faults = list(faults)
        self.calls: list[tuple[str, str, int | None]] = []
        self.struck: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def _active(self, op: str, key: str, max_size: int | None = None) -> list[Fault]:
        with self._lock:
            self.calls.append((op, key, max_size))
            active = [f for f in self.faults if f.strikes(op, key)]
            self.struck += [(op, key, f.kind) for f in active]
        for f in active:
            if f.kind == "storage":
                raise StorageError(f"injected: {op} {key} failed", "retry")
            if f.kind == "connection":
                raise ConnectionResetError(f"injected: connection reset during {op} {key}")
        return active

    def get(self, key, max_size=None):
        active = self._active("get", key, max_size)
        if any(f.kind == "too_large" for f in active):
            raise ObjectTooLargeError(key, max_size or 0)
        data = self.inner.get(key, max_size)
        for f in active:
            if f.kind == "short":
                data = data[:-1]
            elif f.kind == "long":
                data = data + bytes(f.arg or 1)
            elif f.kind == "corrupt" and data:
                data = bytes([data[0] ^ 0x01]) + data[1:]
        return data

    def get_once(self, key, max_size=None):  # the same faults as get
        return self.get(key, max_size)

    def put(self, key, data, *, hedge=True, durable=False):
        self._active("put", key)
        self.inner.put(key, data, hedge=hedge, durable=durable)

    def put_if_absent(self, key, data):
        self._active("put_if_absent", key)
        return self.inner.put_if_absent(key, data)

    def exists(self, key):
        self._active("exists", key)
        return self.inner.exists(key)

    def size(self, key):
        self._active("size", key)
        return self.inner.size(key)

    def delete(self, key):
        self._active("delete", key)
        self.inner.delete(key)

    def delete_many(self, keys):
        keys = list(keys)
        self._active("delete_many", keys[0] if keys else "")
        self.inner.delete_many(keys)

    def list(self, prefix):
        active = self._active("list", prefix)
        for info in self.inner.list(prefix):
            if not any(f.kind == "miss" and fnmatch.fnmatchcase(info.key, f.arg) for f in active):
                yield info
        for f in active:
            if f.kind == "extra":
                yield from (ObjectInfo(k, 1) for k in f.arg if k.startswith(prefix))

    def __getattr__(self, name):  # sync, clean_incomplete, check_access, find_in_parents, close
        return getattr(self.inner, name)


# -- a proxy that breaks connections -----------------------------------------------------------
class _QuietServer(ThreadingHTTPServer):
    """A client that resets a connection the proxy holds (a hedge's loser, closed) is expected."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FaultyProxy:
    """An HTTP proxy on 127.0.0.1 in front of the S3 server that breaks TCP connections on purpose.

    It works per request rather than on raw bytes: clients keep connections alive across many
    requests, so only a request-aware proxy can decide deterministically which response to break.
    Resets:
    - The first ``cut_gets`` GETs of each path whose body is longer than ``cut_after`` get the
      status line, the headers and ``cut_after`` bytes of the body, then the connection is shut.
    - The first ``lose_puts`` PUTs of each path reach the server (the object is stored), then the
      connection is shut before any answer: the client cannot know that its write succeeded.
    Stalls (a hung load balancer): the connection stays open and silent until the client closes
    it, the proxy closes, or ``stall_limit`` seconds pass; ``stall_ends`` counts which.
    - GET responses whose body is longer than ``stall_after`` stall after that many body bytes:
      the first ``stall_first_gets`` of each path, and a ``stall_rate`` share of all the others,
      drawn from a generator seeded with ``seed`` (so a run is repeatable). With
      ``stall_anywhere``, a stalling response stops at a point of its body drawn from the same
      generator instead, uniformly from ``stall_after`` to the last byte (0: possibly before the
      first byte); ``stall_points`` lists the points drawn, as (path, bytes sent, body size).
    - The first ``stall_first_puts`` PUTs of each path are read whole, never forwarded, and stall.
    - The first ``stall_first_requests`` requests the proxy receives, whatever their method and
      path, are read whole, never forwarded, and stall before any answer (no status line): the
      first request of a command, before the client knows how long a request takes here.
    Slow but alive:
    - The first PUT of each path waits ``slow_puts`` seconds before it is forwarded (a slow server),
      or less if a second PUT of that path arrives meanwhile (a hedge: the race is then decided).
    - ``trickle`` = (bytes, seconds): every GET body is sent that many bytes at a time, with that
      pause between pieces (a slow link that keeps moving).
    Answers of its own (what real stores send and moto does not):
    - ``answers`` = {method: [(status, body), ...]}: the next requests of that method, any path,
      are answered with these, in order, without reaching the server; ``answered`` counts them.
    A liar:
    - ``flood_gets`` > 0: every GET is answered 200 with no Content-Length and ``flood_gets`` bytes
      (the body ends when the connection closes); ``flood_sent`` is what the proxy managed to send.
    """

    def __init__(
        self,
        upstream: str,
        *,
        cut_gets: int = 2,
        cut_after: int = 64 * 1024,
        lose_puts: int = 1,
        stall_first_gets: int = 0,
        stall_rate: float = 0.0,
        stall_after: int = 64 * 1024,
        stall_anywhere: bool = False,
        seed: int = 0,
        stall_first_puts: int = 0,
        stall_first_requests: int = 0,
        stall_limit: float = 120.0,
        slow_puts: float = 0.0,
        trickle: tuple[int, float] | None = None,
        flood_gets: int = 0,
        answers: dict[str, list[tuple[int, bytes]]] | None = None,
    ):
        target = urlsplit(upstream)
        self.upstream = (target.hostname, target.port)
        self.cut_gets, self.cut_after, self.lose_puts = cut_gets, cut_after, lose_puts
        self.stall_first_gets, self.stall_rate, self.stall_after = stall_first_gets, stall_rate, stall_after
        self.stall_anywhere = stall_anywhere
        self.stall_points: list[tuple[str, int, int]] = []
        self.stall_first_puts, self.stall_limit = stall_first_puts, stall_limit
        self.stall_first_requests = stall_first_requests
        self.requests = 0  # requests received, any method
        self.slow_puts, self.trickle, self.flood_gets = slow_puts, trickle, flood_gets
        self.seen: Counter[tuple[str, str]] = Counter()
        self.conditional_puts: Counter[str] = Counter()  # PUTs with If-None-Match, by path
        self.cut_bodies = 0  # responses broken mid-body
        self.lost_responses = 0  # requests executed whose answer was never sent
        self.stalled = 0  # responses (or PUTs) held silent
        self.stalled_paths: Counter[str] = Counter()
        self.stall_ends: Counter[str] = Counter()  # how each stall ended: client, limit, teardown
        #: every stall held, once it ended: (method, path, seconds held, how it ended, requests
        #: of that method and path seen by then: above 1, a twin was sent while it was held)
        self.stall_log: list[tuple[str, str, float, str, int]] = []
        self.flood_sent = 0
        self.answers = {method: list(queue) for method, queue in (answers or {}).items()}
        self.answered = 0
        self.floods = 0  # flooded answers that have ended
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified when a counter changes
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue handled for us

            def setup(self):
                super().setup()
                with proxy._lock:
                    proxy._connections.add(self.connection)

            def finish(self):
                with proxy._lock:
                    proxy._connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass  # the client is gone

            def do_request(self):
                try:
                    proxy._forward(self)
                except OSError:
                    self.close_connection = True  # the client hung up mid-answer

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_request

            def log_message(self, *args):  # silence the per-request log on stderr
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving, end every held stall and idle connection, and join the handler threads."""
        self._closing.set()
        self.server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server.server_close()

    def _decide(self, method: str, path: str) -> tuple[int, int]:
        """This request's number among those of its method and path, and among all (1-based)."""
        with self._changed:
            self.seen[method, path] += 1
            self.requests += 1
            self._changed.notify_all()
            return self.seen[method, path], self.requests

    def _count(self, name: str) -> None:
        with self._changed:
            setattr(self, name, getattr(self, name) + 1)
            self._changed.notify_all()

    def wait_until(self, condition, timeout: float = 60.0) -> bool:
        """Wait until ``condition()`` (about the counters) holds: the proxy's threads finish a
        stall or a flood only after the client's side has moved on."""
        with self._changed:
            return self._changed.wait_for(condition, timeout)

    @staticmethod
    def _cut(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        try:
            handler.wfile.flush()
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the client closed first

    def _stall_point(self, path: str, nth: int, size: int) -> int | None:
        """How many body bytes a GET response sends before it stalls; None: it does not stall."""
        if size <= self.stall_after:
            return None
        with self._lock:
            if not (nth <= self.stall_first_gets or self._rng.random() < self.stall_rate):
                return None
            point = self._rng.randrange(self.stall_after, size) if self.stall_anywhere else self.stall_after
            self.stall_points.append((path, point, size))
            return point

    def _hold(self, handler: BaseHTTPRequestHandler) -> None:
        """Keep the connection open and silent (bounded), then shut it."""
        with self._lock:
            self.stalled_paths[handler.path] += 1
        self._count("stalled")
        handler.wfile.flush()
        conn = handler.connection
        held = time.monotonic()
        deadline = held + self.stall_limit
        end = "limit"
        while time.monotonic() < deadline:
            if self._closing.is_set():
                end = "teardown"
                break
            # A bounded wait for the client's close (EOF), not a synchronisation sleep.
            readable, _, _ = select.select([conn], [], [], 0.1)
            if readable:
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    end = "client"
                    break
        with self._changed:
            self.stall_ends[end] += 1
            method, path = handler.command, handler.path
            self.stall_log.append((method, path, time.monotonic() - held, end, self.seen[method, path]))
            self._changed.notify_all()
        self._cut(handler)

    def _send_trickle(self, handler: BaseHTTPRequestHandler, data: bytes) -> None:
        step, pause = self.trickle
        for offset in range(0, len(data), step):
            handler.wfile.write(data[offset : offset + step])
            if self._closing.wait(pause):  # the pace of a slow link (ends early at teardown)
                break

    def _flood(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response_only(200, "OK")
        handler.send_header("Connection", "close")  # no Content-Length: the body ends at close
        handler.end_headers()
        piece = b"\0" * 65536
        sent = 0
        try:
            while sent < self.flood_gets and not self._closing.is_set():
                handler.wfile.write(piece)
                sent += len(piece)
        except OSError:
            pass  # the client stopped reading and closed: what we are testing for
        handler.close_connection = True
        with self._changed:
            self.flood_sent = max(self.flood_sent, sent)
            self.floods += 1
            self._changed.notify_all()

    def _answer(self, handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response_only(status)
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)
        self._count("answered")

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        # botocore sends bodies with a Content-Length (never chunked) with checksums "when_required".
        assert "chunked" not in handler.headers.get("Transfer-Encoding", "")
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("expect", "connection")}
        nth, overall = self._decide(method, path)
        if method == "PUT" and handler.headers.get("If-None-Match") == "*":
            with self._lock:
                self.conditional_puts[path] += 1
        if overall <= self.stall_first_requests:
            return self._hold(handler)  # never forwarded, never answered
        with self._lock:
            queue = self.answers.get(method)
            canned = queue.pop(0) if queue else None
        if canned is not None:
            return self._answer(handler, *canned)
        if method == "PUT":
            if nth <= self.stall_first_puts:
                return self._hold(handler)  # never forwarded: the object is not stored
            if nth == 1 and self.slow_puts:  # a slow server, until a second copy arrives
                self.wait_until(lambda: self.seen[method, path] > 1 or self._closing.is_set(), self.slow_puts)
        if method == "GET" and self.flood_gets:
            return self._flood(handler)
        upstream = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            upstream.request(method, path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            status, reason, response_headers = response.status, response.reason, response.getheaders()
        finally:
            upstream.close()

        if method == "PUT" and nth <= self.lose_puts:
            self._count("lost_responses")
            return self._cut(handler)
        handler.send_response_only(status, reason)
        for name, value in response_headers:
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                handler.send_header(name, value)
        if method == "HEAD":  # no body; the length is the object's
            handler.send_header("Content-Length", response.getheader("Content-Length", "0"))
        else:
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if method == "HEAD":
            return
        if method == "GET" and len(data) > self.cut_after and nth <= self.cut_gets:
            handler.wfile.write(data[: self.cut_after])
            self._count("cut_bodies")
            return self._cut(handler)
        point = self._stall_point(path, nth, len(data)) if method == "GET" else None
        if point is not None:
            handler.wfile.write(data[:point])
            return self._hold(handler)
        if method == "GET" and self.trickle:
            return self._send_trickle(handler, data)
        handler.wfile.write(data)
