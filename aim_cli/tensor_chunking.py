"""Tensor-aligned chunking of safetensors files (format 2, DESIGN.md section 9).

STUB in the foundation commit: the helper that owns this module replaces the implementation,
keeping the API below. Until then every file is cut as plain bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import blake3 as _blake3

from aim_cli.chunking import Chunk, ChunkingParams, iter_chunks


@dataclass(frozen=True)
class TensorChunkingParams:
    """Pinned in aim-repo.json (``"tensor_chunking"``), so every client cuts the same boundaries."""

    max_header_bytes: int = 16 * 1024 * 1024

    def as_dict(self) -> dict:
        return {"algorithm": "safetensors-v1", "max_header_bytes": self.max_header_bytes}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorChunkingParams":
        """ValueError/TypeError/KeyError for anything that is not what as_dict writes."""
        if d.get("algorithm") != "safetensors-v1" or set(d) != {"algorithm", "max_header_bytes"}:
            raise ValueError(f"unsupported tensor chunking {d!r}")
        n = d["max_header_bytes"]
        if type(n) is not int or not 1024 <= n <= 100 * 1024 * 1024:
            raise ValueError("max_header_bytes out of range")
        return cls(n)


def iter_file_chunks(path: str | os.PathLike, params: ChunkingParams, tensors: TensorChunkingParams,
                     on_chunk: Callable[[Chunk, memoryview], None] | None = None,
                     whole: "_blake3.blake3 | None" = None) -> Iterator[Chunk]:
    """Like chunking.iter_chunks (same callback and ``whole`` contract), with tensor-aligned
    boundaries when the file parses as safetensors; each Chunk's ``element_size`` says what
    its bytes are (2: bf16/f16 data, 4: f32, 1: anything else)."""
    return iter_chunks(path, params, on_chunk=on_chunk, whole=whole)
