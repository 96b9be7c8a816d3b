"""The shared test helpers (pytest fixtures live in tests/conftest.py), by section:

- the console script: ``AIM``, ``run`` it as a user would, check its output (``ok``,
  ``one_line_error``) and parse it (``PUSH_LINE``, ``parse_size``);
- model directories: ``write_model``, ``write_file``, ``random_bytes(n, seed)``,
  ``make_mixed_model`` (files of every kind and mode), ``make_variant_model`` (variants that
  share most chunks);
- directory snapshots: ``tree`` (every entry, by digest), ``files_of``, ``assert_same_tree``,
  ``file_contents`` (regular files with their bytes);
- audit repositories: ``RepoEnv`` (what the ``repo`` fixture yields), ``BACKENDS``, ``LOCAL_ONLY``;
- stored blobs in either format: ``altered_blob`` (a corruption only the hash can tell),
  ``stored_sizes``;
- backend wrappers and clocks: ``CountingBackend``, ``HookedBackend``, ``FaultyBackend``,
  ``FakeClock``, ``dead_pid``, ``drop_dac_caps``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest

from aim_cli import push as pushmod
from aim_cli.format import manifest as mf
from aim_cli.format.layout import blob_key
from aim_cli.repository import Repository

# -- the console script -----------------------------------------------------------------------
#: The console script a user runs: ``<venv>/bin/aim_cli``, next to the test's Python.
AIM = Path(sys.executable).parent / "aim_cli"

#: Variables that change how aim_cli finds its config or cache: never inherited by a test run.
_SCRUBBED_ENV = ("AIM_CONFIG", "AIM_CACHE_DIR")


def base_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: this process's (so the S3 fixture's AWS variables are
    inherited) without AIM_CONFIG / AIM_CACHE_DIR, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.update(extra)
    return env


def run(
    args, *, cwd, env: dict[str, str] | None = None, prefix=(), timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``aim_cli ARGS`` with no terminal on stdin and both outputs captured as text."""
    return subprocess.run(
        [*prefix, str(AIM), *map(str, args)],
        cwd=cwd,
        env=base_env() if env is None else env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def describe(res: subprocess.CompletedProcess) -> str:
    return f"exit {res.returncode}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, describe(res)
    assert "Traceback" not in res.stderr, describe(res)
    return res


def one_line_error(res: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Assert exit ``code``, exactly one line on stderr (no traceback), nothing on stdout, and
    that the line contains every one of ``needles`` (case-insensitive). Return the line."""
    assert res.returncode == code, describe(res)
    assert "Traceback" not in res.stderr, describe(res)
    line = res.stderr.strip()
    assert line, describe(res)
    assert line.count("\n") == 0, f"stderr is not one line:\n{describe(res)}"
    assert res.stdout == "", describe(res)
    # "what went wrong; what to do": the CLI's one-line format carries a hint after "; ".
    assert line.startswith("error: ") and "; " in line, f"no hint in {line!r}"
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
    return line


_UNITS = {"byte": 1, "bytes": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(text: str) -> float:
    """'2.9 MiB' -> 3040870.4; '0 Bytes' -> 0 (humanize's binary units)."""
    m = re.fullmatch(r"([\d.]+)\s*(\w+)", text.strip())
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


PUSH_LINE = re.compile(
    r"pushed (?P<model>[^:\s]+):(?P<tag>\S+): (?P<files>\d+) files?, (?P<total>[\d.]+ \w+); "
    r"(?P<new>[\d.]+ \w+) new \((?P<dedup>[\d.]+)% deduplicated\), (?P<stored>[\d.]+ \w+) stored; [\d.]+s\n"
    r"digest: (?P<digest>[0-9a-f]{64})"
)


# -- model directories ------------------------------------------------------------------------
def write_model(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def write_file(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def make_mixed_model(root: Path, *, seed: int = 1, weights: int = 2 * 1024 * 1024) -> Path:
    """A small model directory of every kind of file: a large random 'weights' file, a second
    binary, text files with different modes, an empty file and a nested directory."""
    write_file(root / "weights" / "model.safetensors", random_bytes(weights, seed))
    write_file(root / "weights" / "extra.bin", random_bytes(300 * 1024, seed + 1000))
    write_file(root / "config.json", b'{"hidden_size": 768, "layers": 12}\n')
    write_file(root / "run.sh", b"#!/bin/sh\necho run\n", 0o755)
    write_file(root / "secret.key", b"not really a secret\n", 0o600)
    write_file(root / "empty.txt", b"")
    write_file(root / "deep" / "a" / "b" / "c.txt", b"deep file\n", 0o640)
    return root


def make_variant_model(root: Path, seed: int = 1, variant: int = 0, size: int = 100_000) -> Path:
    """A model directory: ``weights.bin`` (``size`` random bytes from ``seed``; a ``variant`` > 0
    rewrites 1 KiB of it, so variants share most chunks) and a small ``config.json``."""
    data = bytearray(random_bytes(size, seed))
    if variant:
        at = (variant * 7919) % (size - 1024)
        data[at : at + 1024] = random_bytes(1024, 10_000 + variant)
    root.mkdir(parents=True, exist_ok=True)
    (root / "weights.bin").write_bytes(bytes(data))
    (root / "config.json").write_text(json.dumps({"seed": seed, "variant": variant}))
    return root


# -- directory snapshots ----------------------------------------------------------------------
def tree(root: Path, *, mtimes: bool = False, skip_aim: bool = False) -> dict[str, tuple]:
    """Every entry under ``root`` (not following symlinks): directories, files (mode, size,
    sha256, optionally mtime) and symlinks (their target). ``skip_aim`` leaves out the entries
    of ``root`` whose name starts with ``.aim`` (aim_cli's working directory)."""
    out: dict[str, tuple] = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        if skip_aim and Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if not d.startswith(".aim")]
            filenames = [f for f in filenames if not f.startswith(".aim")]
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mtime_ns) if mtimes else ("dir",)
            elif stat.S_ISREG(st.st_mode):
                entry = ("file", stat.S_IMODE(st.st_mode), st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
                out[rel] = entry + (st.st_mtime_ns,) if mtimes else entry
            else:
                out[rel] = ("special", stat.S_IFMT(st.st_mode))
    return out


def files_of(root: Path) -> dict[str, tuple]:
    """Regular files only (mode, size, sha256) outside aim_cli's ``.aim`` working directory."""
    return {k: v for k, v in tree(root, skip_aim=True).items() if v[0] == "file"}


#: What a pull leaves in DEST of its own: its index (docs/design.md §6), in its work directory.
PULL_INDEX = (".aim", ".aim/index.json")


def work_files(dest: Path) -> list[str]:
    """aim_cli's working files left in ``dest`` (partial files, a lock, a probe): anything under
    DEST/.aim but the pull's index, which stays."""
    return sorted(k for k in tree(dest / ".aim") if f".aim/{k}" not in PULL_INDEX) if (dest / ".aim").exists() else []


def without_index(snapshot: dict[str, tuple]) -> dict[str, tuple]:
    """A ``tree`` of DEST without the pull's index."""
    return {k: v for k, v in snapshot.items() if k not in PULL_INDEX}


def assert_same_tree(src: Path, dest: Path) -> None:
    """``dest`` holds exactly the files of ``src``, byte for byte and mode for mode, the same
    directories, and no aim_cli working files (the pull's index aside)."""
    a = tree(src)
    b = without_index(tree(dest))
    assert a.keys() == b.keys(), (
        f"only in source: {sorted(a.keys() - b.keys())}; only in dest: {sorted(b.keys() - a.keys())}"
    )
    for k in a:
        assert a[k] == b[k], f"{k}: {a[k]} != {b[k]}"


def file_contents(root: Path) -> dict[str, tuple[bytes, int]]:
    """{relative path: (content, permission bits)} of the files (directories left out), ignoring
    aim_cli's .aim dir: a test checks each file's bytes, or compares two of these."""
    out = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0] == ".aim":
            continue
        for name in filenames:
            p = Path(dirpath) / name
            out[(rel_dir / name).as_posix()] = (p.read_bytes(), p.stat().st_mode & 0o777)
    return out


# -- audit repositories (the ``repo`` fixture of tests/conftest.py) ---------------------------
NAME = "audit"
S3_AVAILABLE = (
    Path(__file__).with_name("s3_fixtures.py").exists()
    and importlib.util.find_spec("aim_cli.backends.s3.backend") is not None
)
#: "s3" is moto's server, "rgw" Ceph's RADOS Gateway (tests/s3_fixtures.py; marker ``rgw``).
BACKENDS = ["local", "s3", pytest.param("rgw", marks=pytest.mark.rgw)] if S3_AVAILABLE else ["local"]
#: Marks a test whose subject never touches the storage: it runs on the local backend only.
LOCAL_ONLY = pytest.mark.parametrize("repo", ["local"], indirect=True)


@dataclass
class RepoEnv:
    kind: str
    name: str
    config: Path
    tmp: Path
    repository: Repository
    format: int  # the repository's storage format (aim-repo.json): 1 for the "local-f1" repositories
    endpoint: str | None = None  # the S3 server's URL ("s3" and "rgw" repositories)

    def cli(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the real console script, as a user would."""
        return subprocess.run(
            [AIM, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=None if env is None else os.environ | env,
            timeout=timeout,
        )

    def push(self, model: str, source: Path, tag: str):
        return pushmod.push(self.repository, model, tag, source)

    # Raw storage access, for planting faults (both backends speak the same contract).
    def flip_byte(self, digest: str, offset: int = 0) -> None:
        """Alter one byte of the chunk (``altered_blob``): a valid blob of wrong content."""
        backend = self.repository.backend
        backend.put(blob_key(digest), altered_blob(self.repository, backend.get(blob_key(digest)), offset, 0x01))

    def delete_blob(self, digest: str) -> None:
        self.repository.backend.delete(blob_key(digest))

    def blobs(self) -> dict[str, int]:
        return dict(self.repository.iter_blobs())

    def manifest(self, model: str, tag: str):
        return self.repository.get_version(model, tag).manifest


def chunks_of(manifest) -> dict[str, int]:
    return {d: s for f in manifest.files for d, s in f.chunks}


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def drop_dac_caps() -> list[str]:
    """A command prefix under which root obeys file permissions (as a user would): without
    CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, mode 000 denies root too. Empty when not root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root needs setpriv (util-linux) to test unreadable files"
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def commit_versions(
    repo, model: str, tags: list[str], *, chunks: int, unique: int = 1, files: int = 3, chunk_size: int = 64
) -> list[str]:
    """Commit one version per tag without chunking (benchmarks/scale_bench.py does the same at
    scale): each manifest names ``chunks`` stored blobs of ``chunk_size`` bytes over ``files``
    files, shared by every version but ``unique`` per version (near-identical checkpoints, cheap
    to make in any number). Files' whole digests are made up: pulls would refuse them, audits
    never read them. Returns the digests every version shares."""

    def blob(seed: int) -> tuple[str, int]:
        data = random_bytes(chunk_size, seed)
        digest = blake3.blake3(data).hexdigest()
        repo.put_blob(digest, data)
        return digest, chunk_size

    shared = [blob(i) for i in range(chunks - unique)]
    for v, tag in enumerate(tags):
        named = shared + [blob(10**9 + v * unique + i) for i in range(unique)]
        per_file = -(-len(named) // files)
        entries = []
        for f in range(files):
            part = named[f * per_file : (f + 1) * per_file]
            whole = blake3.blake3(f"{tag}/{f}".encode()).hexdigest()
            entries.append(mf.FileEntry(f"shard-{f:03d}.bin", sum(s for _, s in part), 0o644, whole, part))
        repo.commit(
            mf.Manifest(
                mf.FORMAT,
                model,
                tag,
                f"2026-01-01T00:00:00.{v:06d}Z",
                "test@host",
                "",
                sum(e.size for e in entries),
                entries,
            )
        )
    return [d for d, _ in shared]


# -- safetensors files ------------------------------------------------------------------------
def safetensors_bytes(tensors: list[tuple[str, str, list[int], bytes]], metadata: dict | None = None) -> bytes:
    """A safetensors file of ``(name, dtype, shape, data)`` tensors, their data laid out in the
    given order; the JSON header is padded with spaces to a multiple of 8, as safetensors does."""
    header: dict = {"__metadata__": metadata} if metadata is not None else {}
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + b"".join(data for *_, data in tensors)


# -- killing a running command ------------------------------------------------------------------
def sigkill_when(args, reached, *, what: str, deadline: float = 60) -> None:
    """Run ``aim_cli ARGS`` (quiet, no terminal) and SIGKILL it as soon as ``reached()`` is true,
    polling; fail if it finishes first or ``deadline`` seconds pass. For "kill it midway, then
    rerun" tests: the condition looks at what the command wrote (blobs stored, bytes written)."""
    proc = subprocess.Popen(
        [str(AIM), *map(str, args)],
        env=base_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        until = time.monotonic() + deadline
        while not reached():
            assert proc.poll() is None, f"the {what} finished before it could be killed"
            assert time.monotonic() < until, f"the {what} made no progress"
            time.sleep(0.001)  # a polling interval, bounded by the deadline
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


# -- stored blobs in either format (format 1: the chunk's bytes; format 2: header || payload) -----
def altered_blob(repository: Repository, stored: bytes, offset: int | None = None, mask: int = 0xFF) -> bytes:
    """The stored blob ``stored`` with one byte of its CHUNK altered (at ``offset`` modulo its
    size, by default the middle one), stored as ``repository``'s format stores chunks: the size
    and, in format 2, the header are valid, so only the hash can tell (flipping a stored byte
    could hit a format 2 header or make compressed data undecodable: a different fault)."""
    fmt = repository.format()
    raw = bytearray(fmt.decode(stored, fmt.raw_size_of(stored)))
    raw[len(raw) // 2 if offset is None else offset % len(raw)] ^= mask
    return bytes(fmt.encode(bytes(raw)))


def stored_sizes(repository: Repository, digests) -> dict[str, int]:
    """digest -> the size of its stored object (what gc frees and the backend sends), for the
    stored ones of ``digests``."""
    wanted = set(digests)
    return {d: size for d, size in repository.iter_blobs() if d in wanted}


def version_bytes(repository: Repository, model: str, tag: str) -> tuple[int, int]:
    """(raw, stored) bytes of the distinct chunks of ``model:tag``: what a pull that fetches
    each of them once gets as chunks (``fetched_raw_bytes``) and over the wire (``fetched_bytes``)."""
    chunks = chunks_of(repository.get_version(model, tag).manifest)
    return sum(chunks.values()), sum(stored_sizes(repository, chunks).values())


# -- signatures (issue 12) --------------------------------------------------------------------
def sigstore_bundle_bytes(seed: int) -> bytes:
    """A well-formed Sigstore bundle (what `repo check` accepts as a signature's structure) that
    verifies nothing of any version here: a key derived from ``seed`` signing one made-up file.
    What the lifecycle (delete, gc, copy, check) handles as opaque bytes; different per seed."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from aim_cli.signing.bundle import sign_payload
    from aim_cli.signing.statement import build_statement, payload_bytes

    key = ec.derive_private_key(1000 + seed, ec.SECP256R1())
    statement = build_statement("m", {f"file-{seed}.bin": "ab" * 32}, "blake3")
    return sign_payload(key, payload_bytes(statement))


# -- signing (issue 12): keys, a small PKI, and model_signing as the oracle -----------------------------
def write_keys(directory: Path, curve=None, name: str = "key", password: bytes | None = None):
    """A private key (PEM, PKCS8) and its public key (PEM SPKI) as files; returns (key, pem, pub)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key((curve or ec.SECP256R1)())
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    pem = directory / f"{name}.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    pub = directory / f"{name}.pub"
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key, pem, pub


def make_signed_tree(root: Path) -> Path:
    """Files whose upstream order differs from string order ("a/b" < "a.txt"), git files that
    upstream ignores (.gitattributes, .github/) and ones it does not (.gitmodules, sub/.gitignore)."""
    write_file(root / "a" / "b", b"nested\n")
    write_file(root / "a.txt", b"a text\n")
    write_file(root / "B", b"capital\n")
    write_file(root / "weights.bin", random_bytes(150_000, 3))
    write_file(root / ".gitattributes", b"*.bin filter=lfs\n")
    write_file(root / ".github" / "ci.yml", b"on: push\n")
    write_file(root / ".gitmodules", b"\n")
    write_file(root / "sub" / ".gitignore", b"*.tmp\n")
    write_file(root / "caf\u00e9.json", b"{}\n")
    return root


def upstream_payload(directory: Path, key_pem: Path, algorithm: str, tmp: Path) -> dict:
    """What model_signing itself signs for ``directory`` (its Python API, key method)."""
    import base64

    import model_signing

    out = tmp / f"upstream-{algorithm}.sig"
    hc = model_signing.hashing.Config().use_file_serialization(hashing_algorithm=algorithm)
    model_signing.signing.Config().use_elliptic_key_signer(private_key=key_pem).set_hashing_config(hc).sign(
        directory, out
    )
    bundle = json.loads(out.read_text())
    return bundle, json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))


def upstream_verify(directory: Path, bundle: bytes, pub: Path, algorithm: str, tmp: Path) -> None:
    import model_signing

    path = tmp / "to-verify.sig"
    path.write_bytes(bundle)
    hc = model_signing.hashing.Config().use_file_serialization(hashing_algorithm=algorithm)
    hc.set_ignored_paths(paths=[directory / ".aim"])  # a pull's index, as the README tells users
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=pub).set_hashing_config(hc).verify(
        directory, path
    )


def write_pki(directory: Path, key, *, leaf_usage: bool = True) -> tuple[Path, Path, Path]:
    """A root CA, an intermediate CA and a signing certificate for ``key`` (PEM files):
    returns (leaf, intermediate, root). ``leaf_usage`` False: a leaf without digitalSignature."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(name: str, public_key, issuer_name: str, issuer_key, ca: bool, usage: bool):
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=usage,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=ca,
                    crl_sign=ca,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        return b.sign(issuer_key, hashes.SHA256())

    root_key, mid_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = cert("test root", root_key.public_key(), "test root", root_key, True, False)
    mid = cert("test intermediate", mid_key.public_key(), "test root", root_key, True, False)
    leaf = cert("test signer", key.public_key(), "test intermediate", mid_key, False, leaf_usage)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, c in (("leaf", leaf), ("intermediate", mid), ("root", root)):
        paths.append(directory / f"{name}.crt")
        paths[-1].write_bytes(c.public_bytes(serialization.Encoding.PEM))
    return tuple(paths)


def drop_from_page_cache(path) -> None:
    """The file's bytes on disk and none of its pages in the page cache (a cold read next)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
