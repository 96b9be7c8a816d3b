"""Write near-identical model checkpoints in the real safetensors format, for the benchmarks.

    uv run python benchmarks/make_checkpoints.py --size 1GiB --versions 2 --out benchmarks/out/ckpt

OUT/v1, OUT/v2, ... each hold what a Hugging Face checkpoint directory holds:

    config.json  generation_config.json  tokenizer.json (a few hundred KB of BPE vocab and merges)
    model-00001-of-0000N.safetensors ...  model.safetensors.index.json

A safetensors file is an 8-byte little-endian header length, a JSON header (dtype, shape,
data_offsets per tensor, plus __metadata__; padded with spaces to a multiple of 8) and the raw
tensor bytes in header order. The model is a Llama-like stack of F16 tensors whose width and depth
are chosen to reach --size; tensors are assigned to shards in order, like ``max_shard_size``.

Each next version is the previous one "fine-tuned": ~--changed-fraction of the layer tensors are
re-randomised whole, and one new small tensor (a bias) is added to one shard, so that shard's
header grows and the data offsets of every tensor after it shift. OUT/changes.json records, per
version, the changed tensors and their bytes: the benchmark divides the bytes a push stores by
``changed_tensor_bytes``.

Everything derives from --seed. Tensor bytes come from SFC64 ``random_raw`` (a few hundred MB/s
per core) with one exponent bit cleared, so every value is a finite float16 in (-2, 2).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MiB = 1 << 20
GiB = 1 << 30
BLOCK = 32 * MiB  # tensor bytes generated per step: bounds memory for any tensor size
VOCAB = 32000
F16_MASK = np.uint64(0xBFFF_BFFF_BFFF_BFFF)  # clear each float16's top exponent bit: |x| < 2, no inf/nan


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    shard: int
    generation: int = 0  # bumped when the tensor is re-randomised

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * 2  # F16


@dataclass
class Model:
    hidden: int
    intermediate: int
    layers: int
    shards: int
    tensors: list[Tensor] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def layer_shapes(i: int, h: int, inter: int) -> list[tuple[str, tuple[int, ...]]]:
    p = f"model.layers.{i}."
    return [
        (p + "input_layernorm.weight", (h,)),
        (p + "mlp.down_proj.weight", (h, inter)),
        (p + "mlp.gate_proj.weight", (inter, h)),
        (p + "mlp.up_proj.weight", (inter, h)),
        (p + "post_attention_layernorm.weight", (h,)),
        (p + "self_attn.k_proj.weight", (h, h)),
        (p + "self_attn.o_proj.weight", (h, h)),
        (p + "self_attn.q_proj.weight", (h, h)),
        (p + "self_attn.v_proj.weight", (h, h)),
    ]


def design_model(size: int, shard_size: int) -> Model:
    """The widest Llama-like shape that fits at least 8 layers into ``size``, as deep as it fits."""
    hidden = 256
    for h in (256, 512, 1024, 2048, 3072, 4096, 5120, 8192):
        inter = h * 43 // 16 // 64 * 64  # ~2.7x, like Llama's 11008 for 4096
        if 2 * VOCAB * h * 2 + 8 * (4 * h * h + 3 * h * inter) * 2 <= size:
            hidden = h
    h = hidden
    inter = h * 43 // 16 // 64 * 64
    per_layer = (4 * h * h + 3 * h * inter + 2 * h) * 2
    layers = max(1, (size - 2 * VOCAB * h * 2) // per_layer)
    names: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (VOCAB, h))]
    for i in range(layers):
        names += layer_shapes(i, h, inter)
    names += [("model.norm.weight", (h,)), ("lm_head.weight", (VOCAB, h))]
    total = sum(math.prod(s) * 2 for _, s in names)
    shards = max(1, round(total / shard_size))
    model = Model(h, inter, layers, shards)
    per_shard, shard, filled = total / shards, 0, 0
    for name, shape in names:
        nbytes = math.prod(shape) * 2
        if filled and filled + nbytes / 2 > per_shard * (shard + 1) and shard < shards - 1:
            shard += 1
        model.tensors.append(Tensor(name, shape, shard))
        filled += nbytes
    return model


# -- bytes ----------------------------------------------------------------------------------------
def tensor_blocks(seed: int, index: int, generation: int, nbytes: int):
    """The tensor's bytes, BLOCK at a time; a pure function of (seed, tensor, generation)."""
    done, block = 0, 0
    while done < nbytes:
        n = min(BLOCK, nbytes - done)
        words = np.random.SFC64([seed, index, generation, block]).random_raw((n + 7) // 8)
        words &= F16_MASK
        yield memoryview(words.view(np.uint8))[:n]
        done += n
        block += 1


def safetensors_header(tensors: list[Tensor], dtype: str = "F16") -> bytes:
    """u64 little-endian length, then the JSON header padded with spaces to a multiple of 8."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_shard(path: Path, tensors: list[Tensor], seed: int, ids: dict[str, int]) -> None:
    with open(path, "wb") as f:
        f.write(safetensors_header(tensors))
        for t in tensors:
            for block in tensor_blocks(seed, ids[t.name], t.generation, t.nbytes):
                f.write(block)


# -- the small files ------------------------------------------------------------------------------
def config_json(model: Model) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "torch_dtype": "float16",
        "hidden_size": model.hidden,
        "intermediate_size": model.intermediate,
        "num_hidden_layers": model.layers,
        "num_attention_heads": max(1, model.hidden // 128),
        "num_key_value_heads": max(1, model.hidden // 128),
        "vocab_size": VOCAB,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "transformers_version": "4.44.0",
    }


def tokenizer_json(seed: int, vocab_size: int = 12000) -> bytes:
    rng = np.random.default_rng([seed, 7])
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(2, 9, size=vocab_size)
    pieces = rng.choice(letters, size=int(lengths.sum()))
    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    pos = 0
    for n in lengths:
        token = ("\u0120" if pos % 3 == 0 else "") + "".join(pieces[pos : pos + n])
        pos += n
        vocab.setdefault(token, len(vocab))
    tokens = list(vocab)
    merges = [f"{tokens[i][:2]} {tokens[i][2:]}" for i in range(3, min(len(tokens), 3 + vocab_size // 2))]
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, t in enumerate(tokens[:3])
        ],
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": "\u2581"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
            ],
        },
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "fuse_unk": True,
            "byte_fallback": True,
            "vocab": vocab,
            "merges": merges,
        },
    }
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


# -- versions ---------------------------------------------------------------------------------------
def evolve(model: Model, version: int, rng: np.random.Generator, fraction: float) -> tuple[list[str], list[str]]:
    """Make the next version in place: re-randomise ~``fraction`` of the layer tensors (whole) and
    add one small new tensor to one shard. Returns (changed names, added names)."""
    layer_tensors = [t for t in model.tensors if t.name.startswith("model.layers.") and len(t.shape) == 2]
    count = max(1, round(fraction * len(model.tensors)))
    picked = rng.choice(len(layer_tensors), size=min(count, len(layer_tensors)), replace=False)
    changed = []
    for i in sorted(picked):
        layer_tensors[i].generation = version
        changed.append(layer_tensors[i].name)
    layer = int(rng.integers(model.layers))
    anchor = f"model.layers.{layer}.self_attn.q_proj.weight"
    shard = next(t.shard for t in model.tensors if t.name == anchor)
    name = f"model.layers.{layer}.self_attn.q_proj.bias"
    suffix = 0
    while any(t.name == name for t in model.tensors):  # a later version may pick the same layer
        suffix += 1
        name = f"model.layers.{layer}.self_attn.q_proj.lora_{suffix}.weight"
    model.tensors.append(Tensor(name, (model.hidden,), shard, generation=version))
    model.tensors.sort(key=lambda t: (t.shard, t.name))  # header order = data order, by name
    return changed, [name]


def write_version(out: Path, model: Model, seed: int, ids: dict[str, int], tokenizer: bytes) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(config_json(model), indent=2) + "\n")
    (out / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": 1,
                "eos_token_id": 2,
                "do_sample": True,
                "temperature": 0.6,
                "top_p": 0.9,
                "max_length": 4096,
                "transformers_version": "4.44.0",
            },
            indent=2,
        )
        + "\n"
    )
    (out / "tokenizer.json").write_bytes(tokenizer)
    n = model.shards
    weight_map = {}
    for shard in range(n):
        fname = f"model-{shard + 1:05d}-of-{n:05d}.safetensors"
        tensors = [t for t in model.tensors if t.shard == shard]
        write_shard(out / fname, tensors, seed, ids)
        weight_map.update({t.name: fname for t in tensors})
    index = {"metadata": {"total_size": model.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/checkpoints"), help="output directory")
    ap.add_argument("--size", default="1GiB", help="approximate size of one version (default 1GiB)")
    ap.add_argument("--versions", type=int, default=2, help="number of versions (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-size", default="256MiB", help="approximate shard size (default 256MiB)")
    ap.add_argument(
        "--changed-fraction",
        type=float,
        default=0.05,
        help="share of the tensors re-randomised per version (default 0.05)",
    )
    args = ap.parse_args(argv)

    model = design_model(parse_size(args.size), parse_size(args.shard_size))
    ids = {t.name: i for i, t in enumerate(model.tensors)}
    rng = np.random.default_rng([args.seed, 1])
    tokenizer = tokenizer_json(args.seed)
    records = []
    for v in range(1, args.versions + 1):
        started = time.monotonic()
        changed: list[str] = []
        added: list[str] = []
        if v > 1:
            changed, added = evolve(model, v, rng, args.changed_fraction)
            for name in added:
                ids[name] = len(ids)
        out = args.out / f"v{v}"
        write_version(out, model, args.seed, ids, tokenizer)
        by_name = {t.name: t for t in model.tensors}
        changed_bytes = sum(by_name[n].nbytes for n in changed + added)
        record = {
            "tag": f"v{v}",
            "dir": str(out),
            "total_bytes": dir_size(out),
            "tensor_bytes": model.total_bytes,
            "tensors": len(model.tensors),
            "shards": model.shards,
            "changed_tensors": changed,
            "added_tensors": added,
            # v1 is all new; later versions: the bytes of the re-randomised and added tensors.
            "changed_tensor_bytes": model.total_bytes if v == 1 else changed_bytes,
        }
        records.append(record)
        print(
            f"v{v}: {record['total_bytes'] / MiB:.1f} MiB in {model.shards} shards, {len(model.tensors)} tensors; "
            f"changed {len(changed)} + added {len(added)} tensors = {record['changed_tensor_bytes'] / MiB:.2f} MiB "
            f"({time.monotonic() - started:.1f}s)",
            file=sys.stderr,
        )
    summary = {
        "seed": args.seed,
        "size": parse_size(args.size),
        "hidden": model.hidden,
        "layers": model.layers,
        "versions": records,
    }
    (args.out / "changes.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(args.out / "changes.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
