"""benchmarks/shaping_proxy.py, the link of the S3 speed benchmark, in its own process in front of
an echo server of the test's own: it relays every byte in order both ways, holds an answer's
first byte until ``ttfb`` after its request, and never moves a connection faster than ``rate``.
The timing assertions are lower bounds (what the shaping must cost at least), so a slow machine
cannot fail them."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shaping_proxy


@pytest.fixture
def echo():
    """An echo server on 127.0.0.1: (its URL, per connection accepted an event set once the
    other side ended it)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[threading.Event] = []

    def answer(conn: socket.socket, ended: threading.Event) -> None:
        with conn:
            try:
                while data := conn.recv(1 << 16):
                    conn.sendall(data)
            except OSError:
                pass
        ended.set()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(threading.Event())
            threading.Thread(target=answer, args=(conn, accepted[-1]), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    listener.close()


@pytest.fixture
def shaped(echo):
    procs = []

    def start(ttfb: float, rate: float) -> tuple[str, int]:
        proc, url = shaping_proxy.start(echo[0], ttfb, rate)
        procs.append(proc)
        host, port = url.removeprefix("http://").split(":")
        return host, int(port)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait()
        proc.stdout.close()


def _exchange(address: tuple[str, int], payload: bytes) -> tuple[bytes, float, float]:
    """Send ``payload`` and read it back: (what came back, seconds to its first byte, seconds
    to its last), timed from the first byte sent."""
    with socket.create_connection(address) as conn:
        received = bytearray()
        started = time.monotonic()
        sender = threading.Thread(target=conn.sendall, args=(payload,))
        sender.start()
        first = None
        while len(received) < len(payload):
            data = conn.recv(1 << 16)
            assert data, "the proxy closed the connection early"
            first = first if first is not None else time.monotonic() - started
            received += data
        sender.join()
        return bytes(received), first or 0.0, time.monotonic() - started


def test_relays_every_byte_in_order_both_ways(shaped):
    address = shaped(0.0, 1e12)
    payload = os.urandom(3 * shaping_proxy.PIECE + 12345)  # pieces of every size, not a multiple
    back, _, _ = _exchange(address, payload)
    assert back == payload
    back, _, _ = _exchange(address, b"x")  # a second connection, one byte
    assert back == b"x"


def test_an_answer_waits_for_ttfb_after_its_request(shaped):
    address = shaped(0.2, 1e12)
    with socket.create_connection(address) as conn:
        for request in (b"GET one", b"GET two"):  # each request on a kept-alive connection waits
            started = time.monotonic()
            conn.sendall(request)
            assert conn.recv(64) == request
            assert time.monotonic() - started >= 0.2


def test_a_connection_moves_no_faster_than_its_rate(shaped):
    rate = 4e6
    address = shaped(0.0, rate)
    payload = os.urandom(2_000_000)  # 0.5 s at 4 MB/s, each way
    back, _, last = _exchange(address, payload)
    assert back == payload
    # No credit at the start: the first piece each way is free, then every byte is paced.
    assert last >= (len(payload) - 2 * shaping_proxy.PIECE) / rate


def test_a_client_that_hangs_up_closes_the_upstream_connection(shaped, echo):
    address = shaped(0.0, 1e12)
    conn = socket.create_connection(address)
    conn.sendall(b"ping")
    assert conn.recv(4) == b"ping"
    conn.close()
    assert echo[1][-1].wait(10)  # the proxy ended its side: the echo server saw the end
