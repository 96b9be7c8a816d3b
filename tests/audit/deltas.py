"""A local format 3 repository whose chunks tests store as deltas by hand, as a re-encoder does:
the edge marker first (repo.edges.put_edge), then the codec 4 blob (delta_codec.encode_delta)
under the chunk's own name. Versions are committed without chunking (one file of the given
chunks), so a test names exactly which chunk each version holds."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from aim_cli.backends.local import LocalBackend
from aim_cli.format import delta_codec
from aim_cli.format import manifest as mf
from aim_cli.format.layout import blob_key
from aim_cli.repository import Repository
from tests.helpers import random_bytes, run

NAME = "r3"
CHUNK = 4096


@dataclass
class DeltaRepo:
    repository: Repository
    config: Path
    tmp: Path
    raw: dict[str, bytes] = field(default_factory=dict)
    versions: int = 0

    def chunk(self, seed: int, *, like: str | None = None) -> str:
        """Store a chunk whole (a fresh one, or ``like`` with a few bytes changed); its digest."""
        if like is None:
            data = random_bytes(CHUNK, seed)
        else:
            changed = bytearray(self.raw[like])
            for i in range(0, CHUNK, 97):
                changed[i] ^= 1 + (seed + i) % 15
            for i, byte in enumerate(seed.to_bytes(4, "little")):  # bytes 1-4: distinct for each seed
                changed[1 + i] ^= byte
            data = bytes(changed)
        digest = blake3.blake3(data).hexdigest()
        self.raw[digest] = data
        self.repository.put_blob(digest, data)
        return digest

    def as_delta(self, digest: str, base: str, *, marker: bool = True) -> None:
        """Store ``digest`` as a delta against ``base`` (marker first, unless ``marker`` is False:
        a delta written without one, which `repo check` calls damage)."""
        fmt = self.repository.format()
        assert fmt.codecs is not None
        blob = delta_codec.encode_delta(self.raw[digest], self.raw[base], base, 1, fmt.codecs)
        if marker:
            self.repository.edges.put_edge(base, digest)
        self.repository.backend.put(blob_key(digest), blob)

    def commit(self, model: str, tag: str, digests: list[str]) -> None:
        chunks = [(d, CHUNK) for d in digests]
        whole = blake3.blake3(b"".join(self.raw[d] for d in digests)).hexdigest()
        entry = mf.FileEntry("weights.bin", CHUNK * len(digests), 0o644, whole, chunks)
        self.versions += 1
        created = f"2026-01-01T00:00:{self.versions:02d}.000000Z"
        self.repository.commit(mf.Manifest(mf.FORMAT, model, tag, created, "test@host", "", entry.size, [entry]))

    def blobs(self) -> set[str]:
        return {d for d, _ in self.repository.iter_blobs()}

    def markers(self) -> set[tuple[str, str]]:
        return {(b, d) for b, ds in self.repository.edges.edges().items() for d in ds}

    def cli(self, *args) -> subprocess.CompletedProcess:
        return run(["--config", self.config, *args], cwd=self.tmp)


def delta_repo(tmp_path: Path, *, version: int = 3) -> DeltaRepo:
    store = tmp_path / "store"
    repository = Repository(LocalBackend(store), NAME)
    repository.init(version=version)
    config = tmp_path / "model_repos.yaml"
    config.write_text(f"repos:\n  {NAME}: {{type: local, path: {store}}}\n")
    return DeltaRepo(repository, config, tmp_path)
