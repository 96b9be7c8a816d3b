"""Synthetic bf16 checkpoints drawn as trained weights are, for the format 2 benchmark (issue 10).

    uv run python benchmarks/checkpoints.py --out DIR --size 1GiB                 # bf16: v1, v2, shifted
    uv run python benchmarks/checkpoints.py --out DIR --size 1GiB --kind random   # random bytes: v1, v2

OUT/<variant>/ holds ``model-0000k-of-0000N.safetensors`` shards, ``model.safetensors.index.json``
and ``config.json``; OUT/changes.json records every variant (what `write_checkpoints` returns).

The model is Llama-like: an embedding, per layer q/k/v/o and three MLP matrices (the big tensors)
and two layer norms (tiny), a final norm and an output head, in ``--shards`` shards. Each tensor
is drawn from N(0, sigma) with its own sigma = 0.02 * U(0.5, 2) (norms: 1 + N(0, sigma)) and
rounded to bf16 (the top 16 bits of the float32, round to nearest even): the exponent bytes of
such weights take few values, which is what dtype-aware compression exploits. ``--kind random``
writes the same files with uniform random tensor bytes instead (still labelled BF16): no codec
can shrink them, so they show what trying costs.

Variants:
- ``v1``;
- ``v2``: v1 with ``--changed-fraction`` of the big tensors redrawn whole and a few norms changed;
  headers and offsets are v1's, so the changed tensor bytes are exactly what differs;
- ``shifted``: v1 with one tiny tensor inserted second in each shard, so the header grows and
  every later offset shifts; its changed bytes are the inserted tensors plus the shards' headers.

A tensor's bytes are a pure function of (seed, tensor name, generation), so variants share
bytes exactly where they should, and the same arguments always write the same files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from make_checkpoints import parse_size, safetensors_header

MiB = 1 << 20
BLOCK_ELEMENTS = 4 * MiB  # elements drawn per step: bounds memory for any tensor size
HIDDEN_SIZES = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 5120, 8192)
MAX_VOCAB = 32000
NORMS_CHANGED = 3  # small tensors changed in v2, beside the big ones
KINDS = ("bf16", "random")
VARIANTS = ("v1", "v2", "shifted")


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    shard: int
    generation: int = 0  # bumped when a variant redraws the tensor

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * 2  # BF16

    @property
    def big(self) -> bool:
        return len(self.shape) == 2

    @property
    def norm(self) -> bool:
        return self.name.endswith("norm.weight")


# -- the model ------------------------------------------------------------------------------------
def intermediate_size(h: int) -> int:
    return max(64, h * 43 // 16 // 64 * 64)  # ~2.7x, like Llama's 11008 for 4096


def layer_bytes(h: int) -> int:
    return (4 * h * h + 3 * h * intermediate_size(h) + 2 * h) * 2


def layer_tensors(i: int, h: int) -> list[tuple[str, tuple[int, ...]]]:
    p, inter = f"model.layers.{i}.", intermediate_size(h)
    return [
        (p + "input_layernorm.weight", (h,)),
        (p + "self_attn.q_proj.weight", (h, h)),
        (p + "self_attn.k_proj.weight", (h, h)),
        (p + "self_attn.v_proj.weight", (h, h)),
        (p + "self_attn.o_proj.weight", (h, h)),
        (p + "post_attention_layernorm.weight", (h,)),
        (p + "mlp.gate_proj.weight", (inter, h)),
        (p + "mlp.up_proj.weight", (inter, h)),
        (p + "mlp.down_proj.weight", (h, inter)),
    ]


def design(size: int, shards: int) -> list[Tensor]:
    """The widest model whose 8 layers fit in 70% of ``size``, the embedding and head taking about
    15% each (at most a 32000-token vocabulary), as many layers as fill ``size``; tensors are
    assigned to shards in order, each shard about ``total / shards`` bytes."""
    h = HIDDEN_SIZES[0]
    for candidate in HIDDEN_SIZES:
        if 8 * layer_bytes(candidate) <= 0.7 * size:
            h = candidate
    vocab = min(MAX_VOCAB, max(64, int(0.15 * size / (2 * h)) // 64 * 64))
    layers = max(1, (size - 2 * vocab * h * 2 - 2 * h) // layer_bytes(h))
    named = [("model.embed_tokens.weight", (vocab, h))]
    for i in range(layers):
        named += layer_tensors(i, h)
    named += [("model.norm.weight", (h,)), ("lm_head.weight", (vocab, h))]
    total = sum(math.prod(s) * 2 for _, s in named)
    per_shard, shard, filled, out = total / shards, 0, 0, []
    for name, shape in named:
        nbytes = math.prod(shape) * 2
        if filled and filled + nbytes / 2 > per_shard * (shard + 1) and shard < shards - 1:
            shard += 1
        out.append(Tensor(name, shape, shard))
        filled += nbytes
    return out


def hidden_size(tensors: list[Tensor]) -> int:
    return next(t.shape[1] for t in tensors if t.name == "model.embed_tokens.weight")


# -- the variants ---------------------------------------------------------------------------------
def redraw(tensors: list[Tensor], fraction: float, seed: int) -> tuple[list[Tensor], list[str]]:
    """v2: ``fraction`` of the big tensors (at least one) and NORMS_CHANGED norms, redrawn."""
    rng = np.random.default_rng([seed, 2])
    big = [i for i, t in enumerate(tensors) if t.big]
    norms = [i for i, t in enumerate(tensors) if t.norm]
    picked = set(rng.choice(big, size=max(1, round(fraction * len(big))), replace=False).tolist())
    picked |= set(rng.choice(norms, size=min(NORMS_CHANGED, len(norms)), replace=False).tolist())
    out = [replace(t, generation=1) if i in picked else t for i, t in enumerate(tensors)]
    return out, [tensors[i].name for i in sorted(picked)]


def insert_tiny(tensors: list[Tensor]) -> tuple[list[Tensor], list[str]]:
    """shifted: one tiny tensor (a bias of the hidden size) second in each shard."""
    h, out, added, seen = hidden_size(tensors), [], [], set()
    for t in tensors:
        out.append(t)
        if t.shard not in seen:
            seen.add(t.shard)
            out.append(Tensor(f"model.inserted.{t.shard}.bias", (h,), t.shard))
            added.append(out[-1].name)
    return out, added


# -- bytes ----------------------------------------------------------------------------------------
def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16): the top 16 bits, rounded to nearest, ties to even. Finite
    inputs only (these are weights): a NaN's payload could round into infinity."""
    u = x.view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def tensor_id(name: str) -> int:
    """A seed component from the name alone, so inserting a tensor changes no other's bytes."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def tensor_blocks(t: Tensor, kind: str, seed: int):
    """The tensor's bytes, BLOCK_ELEMENTS at a time; a pure function of (seed, name, generation)."""
    key = [seed, tensor_id(t.name), t.generation]
    sigma = np.float32(0.02 * np.random.default_rng(key).uniform(0.5, 2.0))
    n = math.prod(t.shape)
    for block, start in enumerate(range(0, n, BLOCK_ELEMENTS)):
        count = min(BLOCK_ELEMENTS, n - start)
        bits = np.random.SFC64([*key, block])
        if kind == "random":
            yield bits.random_raw((count + 3) // 4).view(np.uint8)[: count * 2]
            continue
        x = np.random.Generator(bits).standard_normal(count, dtype=np.float32)
        x *= sigma
        if t.norm:
            x += np.float32(1.0)
        yield to_bf16(x).view(np.uint8)


def shard_name(shard: int, shards: int) -> str:
    return f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"


def write_variant(out: Path, tensors: list[Tensor], kind: str, seed: int, shards: int) -> int:
    """Write one checkpoint directory; returns the header bytes of its shards."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    h = hidden_size(tensors)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "torch_dtype": "bfloat16",
        "hidden_size": h,
        "intermediate_size": intermediate_size(h),
        "num_hidden_layers": sum(t.name.endswith("q_proj.weight") for t in tensors),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    header_bytes, weight_map = 0, {}
    for shard in range(shards):
        members = [t for t in tensors if t.shard == shard]
        header = safetensors_header(members, "BF16")
        header_bytes += len(header)
        with open(out / shard_name(shard, shards), "wb") as f:
            f.write(header)
            for t in members:
                for block in tensor_blocks(t, kind, seed):
                    f.write(block)
        weight_map.update({t.name: shard_name(shard, shards) for t in members})
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return header_bytes


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_checkpoints(
    out: Path,
    size: int,
    *,
    kind: str = "bf16",
    variants=VARIANTS,
    seed: int = 0,
    shards: int = 4,
    changed_fraction: float = 0.1,
) -> dict[str, dict]:
    """Write OUT/<variant>/ for each of ``variants`` and OUT/changes.json; returns, per variant, its
    directory, sizes and changes against v1 (``changed_bytes``: what a store must add for it)."""
    v1 = design(size, shards)
    by_name = {t.name: t for t in v1}
    records: dict[str, dict] = {}
    for variant in variants:
        if variant == "v1":
            tensors, changed, added = v1, [], []
        elif variant == "v2":
            tensors, changed = redraw(v1, changed_fraction, seed)
            added = []
        elif variant == "shifted":
            tensors, added = insert_tiny(v1)
            changed = []
        else:
            raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        headers = write_variant(out / variant, tensors, kind, seed, shards)
        changed_tensor_bytes = sum(by_name[n].nbytes for n in changed)
        added_tensor_bytes = sum(t.nbytes for t in tensors if t.name in added)
        records[variant] = {
            "dir": str(out / variant),
            "kind": kind,
            "total_bytes": dir_size(out / variant),
            "tensor_bytes": sum(t.nbytes for t in tensors),
            "tensors": len(tensors),
            "shards": shards,
            "hidden": hidden_size(tensors),
            "header_bytes": headers,
            "changed_tensors": changed,
            "changed_tensor_bytes": changed_tensor_bytes,
            "added_tensors": added,
            "added_tensor_bytes": added_tensor_bytes,
            # The bytes a version adds over v1: its changed tensors; with offsets shifted, also
            # the shards' headers (every one differs).
            "changed_bytes": changed_tensor_bytes + (added_tensor_bytes + headers if added else 0),
        }
    (out / "changes.json").write_text(json.dumps({"seed": seed, "size": size, "variants": records}, indent=2) + "\n")
    return records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--size", default="1GiB", help="approximate size of one variant (default 1GiB)")
    ap.add_argument("--kind", choices=KINDS, default="bf16", help="tensor bytes: bf16 weights or random bytes")
    ap.add_argument("--variants", default=None, help="comma-separated, of v1,v2,shifted (default: all; random: v1,v2)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--changed-fraction", type=float, default=0.1, help="share of big tensors redrawn in v2")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    variants = args.variants.split(",") if args.variants else (VARIANTS if args.kind == "bf16" else ("v1", "v2"))
    records = write_checkpoints(
        args.out,
        parse_size(args.size),
        kind=args.kind,
        variants=variants,
        seed=args.seed,
        shards=args.shards,
        changed_fraction=args.changed_fraction,
    )
    for variant, r in records.items():
        print(
            f"{variant}: {r['total_bytes'] / MiB:.1f} MiB, {r['tensors']} tensors in {r['shards']} shards, "
            f"changed {r['changed_bytes'] / MiB:.2f} MiB",
            file=sys.stderr,
        )
    print(args.out / "changes.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
