"""A throw-away single-node Ceph with its RADOS Gateway, for the S3 tests (``rgw`` runs).

Debian's packages (``apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd``) give
the daemons. ``start_cluster`` runs one monitor, one OSD that keeps its objects in RAM (memstore),
no manager and no authentication, and radosgw serving S3 on 127.0.0.1; it creates an S3 user
with the keys it is given (the tests give the session's AWS_* keys, so one environment works
against moto and RGW alike).

The settings below were measured (issue 21):
- ``paxos propose interval`` / ``paxos min wait`` 0.01: start-up in under a second, not 12 s;
- ``osd crush update on start`` / ``osd class update on start`` false, the OSD placed in CRUSH
  here: otherwise about one start in three fails with "wrong fsid";
- ``tcp_nodelay=1`` on the beast frontend: otherwise each small GET takes about 44 ms;
- ``rgw gc obj min wait`` 0 and ``rgw gc processor period`` 10: otherwise deleted objects stay in
  the OSD's RAM for two hours; ``memstore device bytes`` caps that RAM;
- ``ms mon client mode = crc``: radosgw asks for a secure monitor connection by default, which no
  authentication cannot give (it then retries for ever with "get_initial_auth_request returned -13");
- SIGKILL at the end (on SIGTERM each daemon lingers about 2 s); no manager command (``ceph -s``
  or ``ceph pg stat`` hang without a manager).

Every daemon gets a parent-death signal (SIGKILL), so that a killed test run, which runs no
teardown, leaves no daemon behind. ``python -P tests/rgw.py`` starts a cluster, prints its
endpoint and keeps it until Ctrl-C (for benchmarks and manual runs); its S3 keys are
``$AWS_ACCESS_KEY_ID`` / ``$AWS_SECRET_ACCESS_KEY``, or testing / testing.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("radosgw", "ceph-mon", "ceph-osd")
PROGRAMS = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
INSTALL = "apt-get install -y --no-install-recommends " + " ".join(PACKAGES)
#: RAM the OSD may use for objects (memstore keeps them all in memory).
MEMSTORE_BYTES = 2 << 30
STARTUP_DEADLINE = 60.0
_PR_SET_PDEATHSIG = 1


class RgwUnavailable(RuntimeError):
    """The Ceph packages are missing or the cluster did not start (one line says why)."""


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p) is None]


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the process that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf(base: Path, fsid: str, mon_port: int, rgw_port: int) -> str:
    return f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
run dir = {base}/run
admin socket = {base}/run/$name.asok
log file = {base}/log/$name.log
pid file = {base}/run/$name.pid
log to stderr = false
err to stderr = false
mon cluster log file = {base}/log/cluster.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
paxos propose interval = 0.01
paxos min wait = 0.01
[mon]
mon data = {base}/mon
[osd]
osd data = {base}/osd
osd objectstore = memstore
memstore device bytes = {MEMSTORE_BYTES}
osd crush update on start = false
osd class update on start = false
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port} tcp_nodelay=1
rgw data = {base}/rgw
rgw gc obj min wait = 0
rgw gc processor period = 10
"""


@dataclass
class Cluster:
    base: Path
    endpoint: str = ""
    procs: list[subprocess.Popen] = field(default_factory=list)
    own_base: bool = False

    @property
    def conf(self) -> Path:
        return self.base / "ceph.conf"

    def run(self, *args: str, timeout: float = 30) -> str:
        """Run a Ceph tool against this cluster; its stdout, or RgwUnavailable with its stderr."""
        try:
            done = subprocess.run(
                [*args, "-c", str(self.conf)],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        except subprocess.TimeoutExpired:
            raise RgwUnavailable(f"{' '.join(args[:3])} did not finish within {timeout:.0f} s") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise RgwUnavailable(f"{' '.join(args[:3])} failed (exit {done.returncode}): {last}")
        return done.stdout

    def daemon(self, *args: str) -> None:
        with open(self.base / "log" / "daemons.out", "ab") as out:
            self.procs.append(
                subprocess.Popen(
                    [*args, "-f", "-c", str(self.conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                )
            )

    def check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RgwUnavailable(f"{p.args[0]} exited with {p.returncode}; see {self.base}/log")

    def stop(self) -> None:
        """SIGKILL every daemon by its PID and wait for it; remove the cluster's directory."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()
        self.procs.clear()
        if self.own_base:
            shutil.rmtree(self.base, ignore_errors=True)


def _poll(cluster: Cluster, ready, what: str, deadline: float) -> None:
    """Wait, within ``deadline``, until ``ready()`` is true; each round checks the daemons live."""
    while not ready():
        cluster.check_alive()
        if time.monotonic() > deadline:
            raise RgwUnavailable(f"{what} not ready within {STARTUP_DEADLINE:.0f} s; see {cluster.base}/log")
        # Not a synchronisation sleep: a short pause between polls of a bounded loop.
        time.sleep(0.05)


def _osd_up(cluster: Cluster) -> bool:
    dump = json.loads(cluster.run("ceph", "osd", "dump", "-f", "json"))
    return any(o["osd"] == 0 and o["up"] == 1 for o in dump["osds"])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # an HTTP error status is an answer
    except OSError:
        return False


def start_cluster(access_key: str, secret_key: str, base: Path | None = None) -> Cluster:
    """Start monitor, OSD and radosgw under ``base`` (a new temporary directory by default);
    the returned cluster's ``endpoint`` serves S3 to a user with these keys."""
    if not access_key or not secret_key:
        raise RgwUnavailable("no AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY to give the RGW user")
    missing = missing_programs()
    if missing:
        raise RgwUnavailable(f"Ceph RGW needs {', '.join(missing)}: run `{INSTALL}`")
    own = base is None
    base = Path(tempfile.mkdtemp(prefix="aim-rgw-")) if base is None else base
    cluster = Cluster(base, own_base=own)
    try:
        _start(cluster, access_key, secret_key)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start(cluster: Cluster, access_key: str, secret_key: str) -> None:
    base = cluster.base
    for sub in ("mon", "osd", "rgw", "run", "log"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    fsid, osd_uuid = str(uuid.uuid4()), str(uuid.uuid4())
    mon_port, rgw_port = _free_port(), _free_port()
    cluster.conf.write_text(_conf(base, fsid, mon_port, rgw_port))
    deadline = time.monotonic() + STARTUP_DEADLINE

    monmap = str(base / "monmap")
    cluster.run("monmaptool", "--create", "--addv", "a", f"[v2:127.0.0.1:{mon_port}]", "--fsid", fsid, monmap)
    cluster.run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap)
    cluster.daemon("ceph-mon", "-i", "a")

    osd_id = cluster.run("ceph", "--connect-timeout", "20", "osd", "new", osd_uuid).strip()
    if osd_id != "0":
        raise RgwUnavailable(f"ceph osd new gave id {osd_id!r}, expected 0")
    cluster.run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
    cluster.run("ceph", "osd", "crush", "add", "osd.0", "1.0", "host=localhost", "root=default")
    cluster.daemon("ceph-osd", "-i", "0")
    _poll(cluster, lambda: _osd_up(cluster), "the OSD", deadline)

    cluster.daemon("radosgw", "-n", "client.rgw")
    cluster.endpoint = f"http://127.0.0.1:{rgw_port}"
    _poll(cluster, lambda: _answers(cluster.endpoint), "radosgw", deadline)
    cluster.run(
        "radosgw-admin", "user", "create", "--uid", "aim-test", "--display-name", "aim tests",
        "--access-key", access_key, "--secret-key", secret_key,
    )  # fmt: skip


def _serve() -> None:
    started = time.monotonic()
    cluster = start_cluster(
        os.environ.get("AWS_ACCESS_KEY_ID", "testing"), os.environ.get("AWS_SECRET_ACCESS_KEY", "testing")
    )
    print(f"{cluster.endpoint}  (ready in {time.monotonic() - started:.2f} s; Ctrl-C stops it)", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    try:
        _serve()
    except RgwUnavailable as e:
        sys.exit(f"error: {e}")
