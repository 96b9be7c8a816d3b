"""A TCP proxy that makes a local S3 server behave like a distant one: every answer's first byte
comes ``--ttfb`` seconds after its request began (30 ms), and each connection moves at most
``--rate`` bytes a second in each direction (40 MB/s), as one TCP stream over a long path does.

    uv run python benchmarks/shaping_proxy.py --upstream http://127.0.0.1:PORT   # prints its port

Why: moto on 127.0.0.1 answers in a millisecond and serves each request as fast as Python can,
so it rewards tools that make few big requests and hides what a real store costs: a round trip
per request, and a per-stream rate that only parallel streams add up past. Shaped, a tool gets
out of a distant store what its concurrency earns.

It works on bytes, not requests (any HTTP client, keep-alive or not, sees the same link): a
request begins when the client sends bytes while no request is pending; the next bytes of the
server's answer wait until ``--ttfb`` after that moment. The rate is paced piece by piece (at
most 64 KiB), with no credit saved across idle time, so a burst never exceeds it. The proxy runs
in a process of its own (``start``), so its work never competes with the timed process's GIL.

How it moves the bytes: each direction of each connection is a thread that ``splice(2)``s from
one socket into a pipe and from the pipe into the other socket. The bytes never enter Python
and the GIL is released while they move, so the proxy costs the kernel's page moves and a few
system calls per piece. Its first version copied every piece through asyncio's buffers: on 2
CPUs that one Python thread capped the whole link at ~95 MiB/s (`s3_bench.py --link`), below the
4 x 40 MB/s that rclone's four default streams should get, so the benchmark measured the proxy.
Linux only (splice), as the benchmarks that start it already are (GNU time, /proc/stat).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

PIECE = 64 * 1024
DEFAULT_TTFB = 0.030
DEFAULT_RATE = 40e6


class Link:
    """One client connection's shaping: the request pending (when it began), and the pace."""

    def __init__(self, ttfb: float, rate: float):
        self.ttfb, self.rate = ttfb, rate
        self.asked: float | None = None

    def pump(self, src: socket.socket, dst: socket.socket, *, answers: bool) -> None:
        """Move ``src``'s bytes to ``dst`` at ``rate`` until either side ends; ``answers``: the
        server's side, whose first bytes after a request wait for ``ttfb``; else the client's
        side, which marks requests. Ending one direction ends the connection (both threads)."""
        move = _Splicer(src, dst)
        free_at = time.monotonic()
        try:
            while n := move.take():
                now = time.monotonic()
                if answers and self.asked is not None:
                    due, self.asked = self.asked + self.ttfb, None
                    if due > now:
                        time.sleep(due - now)
                        now = time.monotonic()
                elif not answers and self.asked is None:
                    self.asked = now
                free_at = max(free_at, now) + n / self.rate
                move.give(n)
                wait = free_at - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        except OSError:
            pass
        finally:
            move.close()
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)  # wakes the other direction's thread
                except OSError:
                    pass


class _Splicer:
    """Socket to pipe to socket, in the kernel."""

    def __init__(self, src: socket.socket, dst: socket.socket):
        self.src, self.dst = src.fileno(), dst.fileno()
        self.pipe_r, self.pipe_w = os.pipe()

    def take(self) -> int:
        """Up to PIECE bytes of the source, held in the pipe; 0 at its end."""
        return os.splice(self.src, self.pipe_w, PIECE, flags=os.SPLICE_F_MOVE)

    def give(self, n: int) -> None:
        while n:
            n -= os.splice(self.pipe_r, self.dst, n, flags=os.SPLICE_F_MOVE)

    def close(self) -> None:
        os.close(self.pipe_r)
        os.close(self.pipe_w)


def _connect(client: socket.socket, host: str, port: int, ttfb: float, rate: float) -> None:
    try:
        upstream = socket.create_connection((host, port))
    except OSError:
        client.close()
        return
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    link = Link(ttfb, rate)
    answers = threading.Thread(target=link.pump, args=(upstream, client), kwargs={"answers": True}, daemon=True)
    answers.start()
    link.pump(client, upstream, answers=False)
    answers.join()
    client.close()
    upstream.close()


def serve(upstream: str, ttfb: float, rate: float, port: int = 0) -> None:
    target = urlsplit(upstream)
    assert target.hostname is not None and target.port is not None, "the upstream URL needs a host and a port"
    listener = socket.create_server(("127.0.0.1", port), backlog=256)
    print(listener.getsockname()[1], flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_connect, args=(client, target.hostname, target.port, ttfb, rate), daemon=True).start()


def start(upstream: str, ttfb: float = DEFAULT_TTFB, rate: float = DEFAULT_RATE) -> tuple[subprocess.Popen, str]:
    """Run the proxy in a child process: (the process, the proxy's URL). Stop it with
    ``proc.terminate()``."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__)), "--upstream", upstream, "--ttfb", str(ttfb), "--rate", str(rate)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        proc.kill()
        raise RuntimeError("the shaping proxy did not start")
    return proc, f"http://127.0.0.1:{int(line)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, help="the server's URL, http://HOST:PORT")
    ap.add_argument("--ttfb", type=float, default=DEFAULT_TTFB, help="seconds to an answer's first byte (0.03)")
    ap.add_argument("--rate", type=float, default=DEFAULT_RATE, help="bytes/s per connection and direction (40e6)")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one, printed)")
    args = ap.parse_args()
    try:
        serve(args.upstream, args.ttfb, args.rate, args.port)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
