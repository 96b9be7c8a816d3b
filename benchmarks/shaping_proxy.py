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
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
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

    async def pump(self, reader, writer, *, answers: bool) -> None:
        """Copy ``reader`` to ``writer`` at ``rate``; ``answers``: the server's side, whose first
        bytes after a request wait for ``ttfb``; else the client's side, which marks requests."""
        free_at = time.monotonic()
        try:
            while data := await reader.read(PIECE):
                now = time.monotonic()
                if answers and self.asked is not None:
                    due, self.asked = self.asked + self.ttfb, None
                    if due > now:
                        await asyncio.sleep(due - now)
                        now = time.monotonic()
                elif not answers and self.asked is None:
                    self.asked = now
                free_at = max(free_at, now) + len(data) / self.rate
                writer.write(data)
                await writer.drain()
                wait = free_at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.close()
            except (ConnectionError, OSError, RuntimeError):
                pass


async def serve(upstream: str, ttfb: float, rate: float, port: int = 0) -> None:
    target = urlsplit(upstream)

    async def handle(client_r, client_w) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(target.hostname, target.port)
        except OSError:
            client_w.close()
            return
        link = Link(ttfb, rate)
        await asyncio.gather(
            link.pump(client_r, up_w, answers=False), link.pump(up_r, client_w, answers=True), return_exceptions=True
        )

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=256)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


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
        asyncio.run(serve(args.upstream, args.ttfb, args.rate, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
