"""A real training run that writes checkpoints, for the format 3 benchmark (issue 18).

    uv run python benchmarks/training_run.py --out DIR                 # bf16, full size
    uv run python benchmarks/training_run.py --out DIR --dtype f32 --quick

A student MLP learns a teacher (teacher-student regression), trained with Adam in numpy:
- pretraining: lr 3e-4, a checkpoint every 200 steps, six checkpoints;
- fine-tuning: from the last pretraining checkpoint as released (its weights at the checkpoint's
  dtype, a fresh Adam: a released checkpoint holds no optimizer state), lr 1e-5, a checkpoint every
  100 steps, six checkpoints, on a shifted task: the teacher's output layer perturbed.
Each checkpoint is a directory holding ``model.safetensors`` (weights only, bf16 or f32) and
``config.json``. The loss on a fixed held-out set is recorded at the start of each phase and at
each checkpoint.

The student (full size): 256 inputs, hidden layers of 1024, 2048 and 1024 (ReLU), 64 outputs:
4.5 M weights, 9.0 MB in bf16. Its two 1024 x 2048 matrices (4 MiB each in bf16) are the tensors
that chunking cuts; the first layer (512 KiB) is large too (>= 256 KiB); the biases and the
64 x 1024 output layer (128 KiB) are the small tensors.

Deterministic for a seed: every random draw comes from ``numpy.random.default_rng`` of the seed,
and BLAS runs on one thread unless OPENBLAS_NUM_THREADS/OMP_NUM_THREADS say otherwise (set before
numpy is imported): a thread count can change a matrix product's rounding, and OpenBLAS's
spinning threads stall badly on a loaded machine. Adam's update runs over cache-sized blocks in two
threads (numpy releases the GIL), each weight's arithmetic identical whatever the split.
"""

# ruff: noqa: E402 (BLAS's threads are pinned before numpy loads)
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoints import to_bf16

MiB = 1 << 20
DTYPES = {"bf16": "BF16", "f32": "F32"}
SAFETENSORS = "model.safetensors"


@dataclass(frozen=True)
class Config:
    d_in: int = 256
    hidden: tuple[int, ...] = (1024, 2048, 1024)
    d_out: int = 64
    teacher_hidden: int = 512
    batch: int = 32
    eval_samples: int = 2048
    pre_lr: float = 3e-4
    pre_every: int = 200
    ft_lr: float = 1e-5
    ft_every: int = 100
    checkpoints: int = 6  # per phase
    shift: float = 0.5  # fine-tuning's task: the teacher's output layer plus shift x its own scale of noise


QUICK = Config(d_in=128, hidden=(512, 1536, 512), d_out=32, teacher_hidden=256, pre_every=25, ft_every=10)


# -- the model ------------------------------------------------------------------------------------
def layer_names(cfg: Config) -> list[tuple[str, tuple[int, int]]]:
    """(name prefix, (out, in)) of each linear layer; weights are stored (out, in) as PyTorch does."""
    widths = [cfg.d_in, *cfg.hidden, cfg.d_out]
    return [(f"layers.{i}", (widths[i + 1], widths[i])) for i in range(len(widths) - 1)]


def init_student(cfg: Config, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """He initialisation, zero biases, float32."""
    params = {}
    for name, (out, inp) in layer_names(cfg):
        params[f"{name}.weight"] = (rng.standard_normal((out, inp), dtype=np.float32) * np.sqrt(2.0 / inp)).astype(
            np.float32
        )
        params[f"{name}.bias"] = np.zeros(out, np.float32)
    return params


def forward(params: dict[str, np.ndarray], x: np.ndarray, n_layers: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The output, and the input of each layer (kept for the backward pass)."""
    inputs = []
    h = x
    for i in range(n_layers):
        inputs.append(h)
        h = h @ params[f"layers.{i}.weight"].T
        h += params[f"layers.{i}.bias"]
        if i < n_layers - 1:
            np.maximum(h, 0, out=h)
    return h, inputs


def loss_and_grads(
    params: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    n_layers: int,
    grads: dict[str, np.ndarray],
    scale: float,
) -> float:
    """The sum of squared errors over the batch, and its gradient times ``scale`` (2 / the
    number of outputs of the whole batch: the mean's gradient), written into ``grads``."""
    out, inputs = forward(params, x, n_layers)
    diff = out - y
    loss = float(np.sum(diff * diff))
    g = diff * np.float32(scale)
    for i in reversed(range(n_layers)):
        np.matmul(g.T, inputs[i], out=grads[f"layers.{i}.weight"])
        np.sum(g, axis=0, out=grads[f"layers.{i}.bias"])
        if i:
            g = g @ params[f"layers.{i}.weight"]
            g *= inputs[i] > 0  # the ReLU that made this layer's input
    return loss


class Teacher:
    """A random two-layer tanh network whose outputs have unit variance over the inputs."""

    def __init__(self, cfg: Config, rng: np.random.Generator):
        self.w1 = rng.standard_normal((cfg.d_in, cfg.teacher_hidden), dtype=np.float32) / np.sqrt(cfg.d_in)
        self.w2 = rng.standard_normal((cfg.teacher_hidden, cfg.d_out), dtype=np.float32)
        probe = rng.standard_normal((4096, cfg.d_in), dtype=np.float32)
        self.w2 /= np.float32(self(probe).std())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x @ self.w1) @ self.w2

    def shifted(self, scale: float, rng: np.random.Generator) -> Teacher:
        """The fine-tuning task: the output layer moved by ``scale`` of its own spread."""
        other = object.__new__(Teacher)
        other.w1 = self.w1
        noise = rng.standard_normal(self.w2.shape, dtype=np.float32) * self.w2.std()
        other.w2 = (self.w2 + np.float32(scale) * noise).astype(np.float32)
        return other


# -- Adam -----------------------------------------------------------------------------------------
class Trainer:
    """Adam (beta1 0.9, beta2 0.999, eps 1e-8) on the mean squared error, on two cores.

    The parameters live in one flat float32 buffer (the model's arrays are views into it). Each
    step splits the batch in two halves, whose gradients two threads compute into their own flat
    buffers (numpy and BLAS release the GIL; BLAS itself runs on one thread); Adam then sums them
    and updates the weights block by block (each block's temporaries stay in cache), the two
    halves of the buffer in the two threads. Each weight's arithmetic is the same whatever the
    machine's load, so a seed always gives the same weights."""

    BLOCK = 1 << 15

    def __init__(self, params: dict[str, np.ndarray], lr: float, n_layers: int, pool: ThreadPoolExecutor):
        self.lr, self.n_layers, self.pool, self.t = lr, n_layers, pool, 0
        names = list(params)
        offsets = np.cumsum([0, *(params[n].size for n in names)]).tolist()
        self.flat = np.concatenate([params[n].ravel() for n in names]).astype(np.float32)
        self.m, self.v = np.zeros_like(self.flat), np.zeros_like(self.flat)
        self.grad = (np.zeros_like(self.flat), np.zeros_like(self.flat))

        def views(buf: np.ndarray) -> dict[str, np.ndarray]:
            return {
                n: buf[lo:hi].reshape(params[n].shape) for n, lo, hi in zip(names, offsets, offsets[1:], strict=False)
            }

        params.update(views(self.flat))
        self.params = params
        self.grad_views = [views(g) for g in self.grad]

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One step on the batch (x, y); returns the batch's mean squared error before it."""
        half, scale = len(x) // 2, 2.0 / y.size
        parts = [(x[:half], y[:half], 0), (x[half:], y[half:], 1)]
        futures = [
            self.pool.submit(loss_and_grads, self.params, xs, ys, self.n_layers, self.grad_views[k], scale)
            for xs, ys, k in parts
        ]
        loss = sum(f.result() for f in futures) / y.size
        self.t += 1
        step_size = np.float32(self.lr * np.sqrt(1 - 0.999**self.t) / (1 - 0.9**self.t))
        middle = self.flat.size // 2 // self.BLOCK * self.BLOCK
        for f in [
            self.pool.submit(self._update, lo, hi, step_size) for lo, hi in ((0, middle), (middle, self.flat.size))
        ]:
            f.result()
        return loss

    def _update(self, lo: int, hi: int, step_size: np.float32) -> None:
        g_buf, tmp = np.empty(self.BLOCK, np.float32), np.empty(self.BLOCK, np.float32)
        for a in range(lo, hi, self.BLOCK):
            b = min(a + self.BLOCK, hi)
            g, t = g_buf[: b - a], tmp[: b - a]
            m, v, w = self.m[a:b], self.v[a:b], self.flat[a:b]
            np.add(self.grad[0][a:b], self.grad[1][a:b], out=g)
            m *= np.float32(0.9)
            np.multiply(g, np.float32(0.1), out=t)
            m += t
            np.square(g, out=t)
            t *= np.float32(0.001)
            v *= np.float32(0.999)
            v += t
            np.sqrt(v, out=t)
            t += np.float32(1e-8)
            np.divide(m, t, out=t)
            t *= -step_size
            w += t


# -- checkpoints ----------------------------------------------------------------------------------
def encode_tensor(x: np.ndarray, dtype: str) -> bytes:
    """Little-endian bytes of ``x`` (float32) at ``dtype``: bf16 is the top 16 bits of the float32,
    rounded to nearest, ties to even (checkpoints.to_bf16)."""
    if dtype == "bf16":
        return to_bf16(np.ascontiguousarray(x, np.float32)).astype("<u2").tobytes()
    return np.ascontiguousarray(x, "<f4").tobytes()


def decode_tensor(raw: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "BF16":
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if dtype == "F32":
        return np.frombuffer(raw, "<f4").astype(np.float32).reshape(shape)
    raise ValueError(f"unsupported dtype {dtype}")


def write_safetensors(path: Path, params: dict[str, np.ndarray], dtype: str) -> None:
    """A safetensors file: u64 little-endian header length, a JSON header (dtype, shape and
    data_offsets of each tensor, padded with spaces to a multiple of 8), then the data. Tensors
    in name order, as safetensors' own writer orders tensors of one dtype. Written beside, then
    renamed: nothing half-written under the final name."""
    header: dict = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(params):
        raw = encode_tensor(params[name], dtype)
        header[name] = {
            "dtype": DTYPES[dtype],
            "shape": list(params[name].shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for raw in blobs:
            f.write(raw)
    tmp.replace(path)


def read_safetensors(path: Path) -> tuple[int, dict[str, tuple[str, tuple[int, ...], bytes]]]:
    """(header bytes including the length prefix, name -> (dtype, shape, tensor bytes)), in file order."""
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    data = memoryview(raw)[8 + n :]
    tensors = {}
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        begin, end = e["data_offsets"]
        tensors[name] = (e["dtype"], tuple(e["shape"]), bytes(data[begin:end]))
    return 8 + n, tensors


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """A checkpoint's weights as float32 (bf16 widened exactly)."""
    _, tensors = read_safetensors(path)
    return {name: decode_tensor(raw, dtype, shape).copy() for name, (dtype, shape, raw) in tensors.items()}


def write_checkpoint(directory: Path, params: dict[str, np.ndarray], dtype: str, cfg: Config) -> None:
    """``model.safetensors`` and ``config.json`` (the same in every checkpoint of a run, as a
    model's config is)."""
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / SAFETENSORS, params, dtype)
    config = {
        "architectures": ["MLP"],
        "model_type": "mlp",
        "torch_dtype": "bfloat16" if dtype == "bf16" else "float32",
        "layers": [list(shape) for _, shape in layer_names(cfg)],
        "activation": "relu",
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")


# -- the run --------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    phase: str  # "pretrain" or "finetune"
    step: int
    dir: str
    loss: float  # on the phase's held-out set
    train_loss: float  # mean training loss since the previous checkpoint


@dataclass
class Run:
    dtype: str
    seed: int
    config: dict
    weights: int  # number of parameters
    start_loss: dict[str, float] = field(default_factory=dict)  # held-out loss at each phase's start
    checkpoints: list[Checkpoint] = field(default_factory=list)
    seconds: float = 0.0

    def phase(self, name: str) -> list[Checkpoint]:
        return [c for c in self.checkpoints if c.phase == name]


def train_phase(
    run: Run, phase: str, params: dict, task: Teacher, lr: float, every: int, cfg: Config, out: Path, seeds
) -> None:
    """Train ``params`` on ``task`` and write ``cfg.checkpoints`` checkpoints, ``every`` steps apart."""
    data_rng = np.random.default_rng(seeds)
    x_eval = np.random.default_rng([*seeds, 1]).standard_normal((cfg.eval_samples, cfg.d_in), dtype=np.float32)
    y_eval = task(x_eval)
    n_layers = len(layer_names(cfg))

    def held_out() -> float:
        out_, _ = forward(params, x_eval, n_layers)
        return float(np.mean((out_ - y_eval) ** 2))

    run.start_loss[phase] = held_out()
    print(f"{phase}: held-out loss at the start {run.start_loss[phase]:.4f}", file=sys.stderr)
    with ThreadPoolExecutor(2) as pool:
        trainer = Trainer(params, lr, n_layers, pool)
        for k in range(1, cfg.checkpoints + 1):
            losses = []
            for _ in range(every):
                x = data_rng.standard_normal((cfg.batch, cfg.d_in), dtype=np.float32)
                losses.append(trainer.step(x, task(x)))
            step = k * every
            directory = out / phase / f"step-{step:05d}"
            write_checkpoint(directory, params, run.dtype, cfg)
            c = Checkpoint(phase, step, str(directory), held_out(), float(np.mean(losses)))
            run.checkpoints.append(c)
            print(f"{phase} step {step}: held-out loss {c.loss:.4f}, train loss {c.train_loss:.4f}", file=sys.stderr)


def train(out: Path, dtype: str = "bf16", seed: int = 0, quick: bool = False, config: Config | None = None) -> Run:
    """Both phases; OUT/pretrain/step-NNNNN/ and OUT/finetune/step-NNNNN/ (``config``, if given,
    in place of the full or quick one). Asserts that the model learns."""
    cfg = config or (QUICK if quick else Config())
    started = time.perf_counter()
    params = init_student(cfg, np.random.default_rng([seed, 0]))
    run = Run(dtype, seed, asdict(cfg), sum(p.size for p in params.values()))
    teacher = Teacher(cfg, np.random.default_rng([seed, 1]))
    train_phase(run, "pretrain", params, teacher, cfg.pre_lr, cfg.pre_every, cfg, out, [seed, 2])
    # Fine-tuning starts from the released checkpoint: its weights as stored, a fresh optimizer.
    base = load_weights(Path(run.phase("pretrain")[-1].dir) / SAFETENSORS)
    shifted = teacher.shifted(cfg.shift, np.random.default_rng([seed, 3]))
    train_phase(run, "finetune", base, shifted, cfg.ft_lr, cfg.ft_every, cfg, out, [seed, 4])
    run.seconds = time.perf_counter() - started
    check_learned(run)
    return run


def check_learned(run: Run) -> None:
    """The loss falls clearly: pretraining ends below half its start, each phase's last checkpoint
    is below its first, and fine-tuning ends below where it started on the shifted task."""
    pre, ft = run.phase("pretrain"), run.phase("finetune")
    assert pre[-1].loss < 0.5 * run.start_loss["pretrain"], (run.start_loss["pretrain"], pre[-1].loss)
    assert pre[-1].loss < pre[0].loss, (pre[0].loss, pre[-1].loss)
    assert ft[-1].loss < ft[0].loss < run.start_loss["finetune"], (run.start_loss["finetune"], ft[0].loss, ft[-1].loss)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="directory for the checkpoints")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a smaller model and fewer steps (a smoke run)")
    args = ap.parse_args(argv)
    run = train(args.out, args.dtype, args.seed, args.quick)
    print(json.dumps(asdict(run), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
