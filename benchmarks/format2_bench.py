"""Format 2 against format 1 (issue 10, item 4): one run, one table of ratios, each against its
baseline measured in the same run, format 1 and format 2 side by side with the issue's targets.

    uv run python benchmarks/format2_bench.py                   # 1 GiB checkpoints, S3 at 256 MiB
    uv run python benchmarks/format2_bench.py --quick           # a 64 MiB smoke run
    uv run python benchmarks/format2_bench.py --json out.json   # the table as JSON too
    uv run python benchmarks/format2_bench.py --quick --formats 2,3   # format 3's cuts beside format 2

Data (benchmarks/checkpoints.py): a bf16 model drawn as trained weights are (v1; v2 with 10% of
its big tensors redrawn and a few norms; "shifted", a tiny tensor inserted second in each shard)
and a random-bytes model of the same layout (v1, v2). Each model goes into a fresh local repository
of each format, made by `aim_cli repo create --format N`; an aim_cli without that option makes
format 1 only, and then both columns are format 1 (the header says so). The console script of
this environment runs in subprocesses (run.py's helpers: timing, `cp -r && sync`, page cache).

How each figure is measured:
- stored bytes: the sizes of the files under the repository's blobs/ (stored objects, any blob
  header included), which works for both formats; "raw" is the model directory's size;
- new raw chunk bytes of a version: from the manifests (models/m/versions/<tag>.json), the raw
  sizes of the chunks it names and v1 does not; new stored bytes: the blob files of those chunks;
- pull v2 into a copy of the pulled v1 directory, stored bytes fetched: the pull's own count when
  its JSON reports one (``fetched_bytes`` beside ``fetched_raw_bytes``), cross-checked; else the
  blob files of the chunks it fetched, which are the entries of a fresh `--cache-dir` (pull puts
  there exactly the chunks it gets from the repository), checked against the pull's raw fetched
  bytes. The table says which;
- push / pull against `cp -r SRC DST && sync` of the same model, timed right after; every timed
  command starts after a sync, pulls and their cp with the page cache dropped when allowed;
- CPU-seconds per GiB: user + system time of the command and its children per GiB of model;
  peak RSS: GNU time's maximum resident set;
- S3: a moto server on 127.0.0.1 (run.start_moto), a smaller model (--s3-size): model bytes per
  second of a push into an empty bucket and of a cold pull, format 2 / format 1.
Pulled trees are compared with their sources by digest. One run of each figure: read the wall-time
ratios with the load average printed above the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import checkpoints
import run as rb
from make_checkpoints import parse_size

from aim_cli.format.layout import REPO_META_KEY, blob_key, digest_of_shard_key, manifest_key

MiB, GiB = rb.MiB, 1 << 30
FORMATS = (1, 2)  # the columns; --formats sets them (the first is the S3 rows' baseline)
MODEL = "m"
QUICK_SIZE = "64MiB"


def has_format_option(env: dict) -> bool:
    """Whether this aim_cli's `repo create` takes --format (format 2 exists)."""
    out = subprocess.run(
        [str(rb.AIM), "repo", "create", "--help"], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL
    )
    return "--format" in out.stdout


class FormatBench(rb.Bench):
    """run.Bench whose repositories are made by `repo create`, of a chosen format when it can."""

    def __init__(self, work: Path, cache: rb.PageCache):
        super().__init__(work, 1, cache)
        self.format_option = has_format_option(self.env)

    @property
    def root(self) -> Path:
        return self.work / "repo"  # where run.Bench.new_location puts a local repository

    def create(self, kind: str, fmt: int) -> int:
        """A fresh, empty repository ``bench``; returns the format its aim-repo.json records."""
        entry = self.new_location(kind)
        self.config.unlink(missing_ok=True)
        args = ["repo", "create", "bench", "--type", entry["type"], "--path", entry["path"]]
        if kind == "s3":
            args += ["--endpoint-url", entry["endpoint_url"], "--region", entry["region"]]
        if self.format_option:
            args += ["--format", str(fmt)]
        rb.run(self.aim(*args), self.env)
        if kind == "local":
            meta = (self.root / REPO_META_KEY).read_bytes()
        else:
            bucket, _, prefix = entry["path"].removeprefix("s3://").partition("/")
            meta = self.s3[1].get_object(Bucket=bucket, Key=f"{prefix}/{REPO_META_KEY}")["Body"].read()
        return json.loads(meta)["format"]

    def manifest(self, tag: str) -> dict:
        return json.loads((self.root / manifest_key(MODEL, tag)).read_bytes())

    def stored(self) -> tuple[int, int]:
        """(bytes, objects) under the local repository's blobs/."""
        sizes = [p.stat().st_size for p in (self.root / "blobs").rglob("*") if p.is_file()]
        return sum(sizes), len(sizes)

    def stored_size(self, digests) -> int:
        return sum((self.root / blob_key(d)).stat().st_size for d in digests)


# -- measurements ---------------------------------------------------------------------------------
def chunk_sizes(manifest: dict) -> dict[str, int]:
    """Raw size of each distinct chunk the manifest names."""
    return {digest: size for f in manifest["files"] for digest, size in f["chunks"]}


@dataclass
class Delta:
    """A version pushed on top of v1, and pulled into a directory holding v1."""

    changed: int  # bytes the version changes (checkpoints.py's changed_bytes)
    new_raw: int
    new_stored: int
    new_objects: int
    fetched_stored: int
    fetched_how: str
    fetched_objects: int
    fetched_raw: int
    push_json: dict
    pull_json: dict


@dataclass
class Local:
    format: int  # as aim-repo.json records it
    raw: int  # v1's model bytes
    stored: int
    objects: int
    push: rb.Result
    cp_push: rb.Result
    pull: rb.Result
    cp_pull: rb.Result
    push_json: dict
    deltas: dict[str, Delta]


@dataclass
class S3:
    format: int
    raw: int
    push: rb.Result
    pull: rb.Result


def fetched_chunks(cache: Path) -> dict[str, int]:
    """digest -> raw size of each entry of a pull's chunk cache, fresh before the pull: the pull
    puts there exactly the chunks it fetched from the repository (pull.py's ``_chunk``)."""
    entries = ((p, digest_of_shard_key(p.relative_to(cache).as_posix())) for p in cache.rglob("*") if p.is_file())
    return {digest: p.stat().st_size for p, digest in entries if digest}


def fetched_raw(pull_json: dict) -> int:
    """Raw bytes a pull fetched: ``fetched_raw_bytes`` where the pull also reports stored bytes
    (it then counts ``fetched_bytes`` as stored), else ``fetched_bytes``."""
    return pull_json.get("fetched_raw_bytes", pull_json["fetched_bytes"])


def fetched_stored(b: FormatBench, pull_json: dict, fetched: dict[str, int]) -> tuple[int, str]:
    """Stored bytes a pull fetched, and how we know (see the module docstring)."""
    raw, from_cache = fetched_raw(pull_json), b.stored_size(fetched)
    exact = sum(fetched.values()) == raw  # the cache holds every chunk fetched, each once
    if "fetched_raw_bytes" in pull_json:
        reported = pull_json["fetched_bytes"]
        agree = "agree" if exact and from_cache == reported else f"say {from_cache}"
        return reported, f"the pull's stored count, fetched_bytes; the blobs of the chunks in its --cache-dir {agree}"
    how = "stored size of the blobs the pull fetched (the entries of its --cache-dir)"
    if exact:
        return from_cache, how
    # A chunk fetched twice, or a cache put that failed: scale to the pull's raw count.
    cached = sum(fetched.values())
    return (
        round(from_cache * raw / cached) if cached else 0,
        f"{how}, scaled to the pull's raw fetched bytes ({raw} of {cached}): an estimate",
    )


class Digests(dict):
    """tree_digests of each source directory, computed once."""

    def __missing__(self, path: Path) -> dict:
        self[path] = rb.tree_digests(path)
        return self[path]


def check_same(dest: Path, src: Path, digests: Digests) -> None:
    if rb.tree_digests(dest) != digests[src]:
        raise RuntimeError(f"pulled {dest} differs from {src}")


def measure_local(b: FormatBench, ck: dict[str, dict], fmt: int, digests: Digests) -> Local:
    """push v1 (timed), then the other variants; pull v1 cold (timed); pull each variant into a
    copy of the v1 directory."""
    v1 = Path(ck["v1"]["dir"])
    actual = b.create("local", fmt)
    b.cache.settle()
    push = b.push(v1, "v1", rss=True)
    cp_push = rb.cp_baseline(v1, b.work / "cp-dst", b.cache)
    stored, objects = b.stored()
    m1 = chunk_sizes(b.manifest("v1"))
    pushed = {}
    for variant in ck:
        if variant != "v1":
            b.cache.settle()
            pushed[variant] = b.push(Path(ck[variant]["dir"]), variant).json()

    dest = b.work / "pull-v1"
    rb.rmtree(dest)
    b.cache.settle(cold=True)
    pull = rb.run(b.pull("v1", dest), b.env, rss=True)
    check_same(dest, v1, digests)
    cp_pull = rb.cp_baseline(v1, b.work / "cp-dst", b.cache, cold=True)

    deltas = {}
    for variant, push_json in pushed.items():
        new = {d: s for d, s in chunk_sizes(b.manifest(variant)).items() if d not in m1}
        new_raw, new_stored = sum(new.values()), b.stored_size(new)
        into, cache = b.work / "pull-into-v1", b.work / "fetched"
        for path in (into, cache):
            rb.rmtree(path)
        shutil.copytree(dest, into)
        b.cache.settle()
        pull_json = rb.run([*b.pull(variant, into), "--cache-dir", str(cache)], b.env).json()
        check_same(into, Path(ck[variant]["dir"]), digests)
        fetched = fetched_chunks(cache)
        got, how = fetched_stored(b, pull_json, fetched)
        for path in (into, cache):
            rb.rmtree(path)
        deltas[variant] = Delta(
            ck[variant]["changed_bytes"],
            new_raw,
            new_stored,
            len(new),
            got,
            how,
            len(fetched),
            fetched_raw(pull_json),
            push_json,
            pull_json,
        )
    rb.rmtree(dest)
    return Local(actual, ck["v1"]["total_bytes"], stored, objects, push, cp_push, pull, cp_pull, push.json(), deltas)


def measure_s3(b: FormatBench, ck: dict[str, dict], fmt: int, digests: Digests) -> S3:
    v1 = Path(ck["v1"]["dir"])
    actual = b.create("s3", fmt)
    b.cache.settle()
    push = b.push(v1, "v1")
    dest = b.work / "pull-s3"
    rb.rmtree(dest)
    b.cache.settle(cold=True)
    pull = rb.run(b.pull("v1", dest), b.env)
    check_same(dest, v1, digests)
    rb.rmtree(dest)
    return S3(actual, ck["v1"]["total_bytes"], push, pull)


# -- the table ------------------------------------------------------------------------------------
# The targets of issue 10, for format 2: (comparison, limit).
TARGETS = {
    "v1_stored": ("<=", 0.72),
    "v2_new_raw": ("<=", 1.05),
    "v2_new_stored": ("<=", 0.75),
    "pull_fetched": ("<=", 0.75),
    "push_cp": ("<=", 1.6),
    "pull_cp": ("<=", 1.3),
    "s3": (">=", 1.0),
}
# Which targets hold for which model: random bytes cannot compress; the shifted checkpoint's
# changed bytes are a few headers and tiny tensors, so its ratios have no target in the issue.
APPLIES = {"bf16": set(TARGETS), "random": {"v2_new_raw", "push_cp", "pull_cp", "s3"}, "shifted": set()}


@dataclass
class Cell:
    value: float
    text: str


@dataclass
class Row:
    section: str
    key: str
    figure: str
    cells: dict[int, Cell]  # by column (format asked for)
    note: str = ""

    @property
    def target(self) -> tuple[str, float] | None:
        return TARGETS.get(self.key) if self.key in APPLIES[self.section] else None

    @property
    def met(self) -> bool | None:
        if self.target is None or 2 not in self.cells:
            return None
        op, limit = self.target
        v = self.cells[2].value
        return v <= limit if op == "<=" else v >= limit

    def markdown(self) -> list[str]:
        target = f"{self.target[0]} {self.target[1]}" if self.target else "—"
        met = "—" if self.met is None else ("yes" if self.met else "**NO**")
        figure = f"{self.figure} ({self.note})" if self.note else self.figure
        return [self.section, figure, *(self.cells[f].text if f in self.cells else "—" for f in FORMATS), target, met]

    def json(self) -> dict:
        return {
            "section": self.section,
            "key": self.key,
            "figure": self.figure,
            "note": self.note,
            "target": list(self.target) if self.target else None,
            "met": self.met,
            **{f"format{f}": asdict(self.cells[f]) if f in self.cells else None for f in FORMATS},
        }


def human(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < MiB else rb.mib(n)


def ratio(num: float, den: float, detail: str) -> Cell:
    r = num / den if den else float("inf")
    return Cell(r, f"{r:.3f} ({detail})")


def time_ratio(aim: rb.Result, cp: rb.Result) -> Cell:
    return Cell(aim.seconds / cp.seconds, f"{aim.seconds / cp.seconds:.2f}x ({aim.seconds:.2f} s / {cp.seconds:.2f} s)")


def per_gib(r: rb.Result, raw: int, cp: rb.Result) -> Cell:
    v = r.cpu / (raw / GiB)
    return Cell(v, f"{v:.2f} (cp: {cp.cpu / (raw / GiB):.2f})")


def byte_rows(section: str, by_fmt: dict[int, Local], variant: str, what: str) -> list[Row]:
    d = {f: m.deltas[variant] for f, m in by_fmt.items()}
    hows = sorted({x.fetched_how for x in d.values()})
    return [
        Row(
            section,
            "v2_new_raw",
            f"{variant} new raw chunk bytes / {what}",
            {f: ratio(x.new_raw, x.changed, f"{human(x.new_raw)} / {human(x.changed)}") for f, x in d.items()},
        ),
        Row(
            section,
            "v2_new_stored",
            f"{variant} new stored bytes / {what}",
            {
                f: ratio(x.new_stored, x.changed, f"{human(x.new_stored)} in {x.new_objects} objects")
                for f, x in d.items()
            },
        ),
        Row(
            section,
            "pull_fetched",
            f"pull {variant} into the v1 directory: stored bytes fetched / {what}",
            {
                f: ratio(x.fetched_stored, x.changed, f"{human(x.fetched_stored)} in {x.fetched_objects} objects")
                for f, x in d.items()
            },
            note="; ".join(f"format {f}: {x.fetched_how}" for f, x in d.items()) if len(hows) > 1 else hows[0],
        ),
    ]


def local_rows(section: str, by_fmt: dict[int, Local]) -> list[Row]:
    m = by_fmt
    return [
        Row(
            section,
            "v1_stored",
            "v1 stored / raw",
            {f: ratio(x.stored, x.raw, f"{human(x.stored)} in {x.objects} objects") for f, x in m.items()},
        ),
        *byte_rows(section, m, "v2", "changed tensor bytes"),
        Row(section, "push_cp", "push v1 / `cp -r && sync`", {f: time_ratio(x.push, x.cp_push) for f, x in m.items()}),
        Row(
            section,
            "pull_cp",
            "pull v1 cold / `cp -r && sync`",
            {f: time_ratio(x.pull, x.cp_pull) for f, x in m.items()},
        ),
        Row(
            section,
            "push_cpu",
            "push v1: CPU-seconds per GiB",
            {f: per_gib(x.push, x.raw, x.cp_push) for f, x in m.items()},
        ),
        Row(
            section,
            "pull_cpu",
            "pull v1: CPU-seconds per GiB",
            {f: per_gib(x.pull, x.raw, x.cp_pull) for f, x in m.items()},
        ),
        Row(
            section,
            "push_rss",
            "push v1: peak RSS",
            {f: Cell(x.push.maxrss / 1e6, f"{x.push.maxrss / 1e6:.0f} MB") for f, x in m.items()},
        ),
        Row(
            section,
            "pull_rss",
            "pull v1: peak RSS",
            {f: Cell(x.pull.maxrss / 1e6, f"{x.pull.maxrss / 1e6:.0f} MB") for f, x in m.items()},
        ),
    ]


def s3_rows(section: str, by_fmt: dict[int, S3]) -> list[Row]:
    rows = []
    base = FORMATS[0]
    for op in ("push", "pull"):
        speed = {f: x.raw / MiB / getattr(x, op).seconds for f, x in by_fmt.items()}
        cells = {
            f: Cell(
                speed[f] / speed[base],
                f"{speed[f]:.1f} MiB/s" + ("" if f == base else f" ({speed[f] / speed[base]:.2f}x)"),
            )
            for f in by_fmt
        }
        others = " / ".join(f"format {f}" for f in FORMATS if f != base)
        rows.append(
            Row(
                section,
                "s3",
                f"S3 (moto) {op}{' cold' if op == 'pull' else ''}: model bytes per second, {others} / format {base}",
                cells,
            )
        )
    return rows


def build_rows(local: dict[str, dict[int, Local]], s3: dict[str, dict[int, S3]]) -> list[Row]:
    rows = []
    for kind, by_fmt in local.items():
        rows += local_rows(kind, by_fmt)
        rows += s3_rows(kind, s3[kind]) if kind in s3 else []
        if all("shifted" in x.deltas for x in by_fmt.values()):
            rows += byte_rows("shifted", by_fmt, "shifted", "inserted tensor + header bytes")
    return rows


# -- main -----------------------------------------------------------------------------------------
def describe(ck: dict[str, dict]) -> str:
    v1 = ck["v1"]
    text = (
        f"{v1['total_bytes'] / MiB:.0f} MiB, {v1['tensors']} tensors (hidden {v1['hidden']}) in {v1['shards']} shards"
    )
    if "v2" in ck:
        text += f"; v2 redraws {len(ck['v2']['changed_tensors'])} tensors ({ck['v2']['changed_bytes'] / MiB:.2f} MiB)"
    if "shifted" in ck:
        s = ck["shifted"]
        text += (
            f"; shifted inserts {len(s['added_tensors'])} tensors of"
            f" {s['added_tensor_bytes'] // len(s['added_tensors'])}"
            f" bytes, headers {s['header_bytes'] / 1024:.1f} KiB"
        )
    return text


def measure_models(
    b: FormatBench, work: Path, size: int, seed: int, where: str, measure, kinds: dict[str, tuple[str, ...]]
) -> tuple[dict[str, dict], dict[str, str]]:
    """``measure(b, checkpoints, format, digests)`` of each kind of model (written, measured in each
    format, removed); returns the results by kind and format, and each model's description."""
    results: dict[str, dict] = {}
    about: dict[str, str] = {}
    for kind, variants in kinds.items():
        print(f"{kind}: writing checkpoints of {size / MiB:.0f} MiB", file=sys.stderr)
        ck = checkpoints.write_checkpoints(work / "ckpt", size, kind=kind, variants=variants, seed=seed)
        about[kind] = describe(ck)
        digests = Digests()
        results[kind] = {}
        for fmt in FORMATS:
            print(f"{kind}: format {fmt}, {where}", file=sys.stderr)
            results[kind][fmt] = measure(b, ck, fmt, digests)
        rb.rmtree(work / "ckpt")
    return results, about


def aim_revision() -> str:
    import aim_cli  # the package of this environment, whose console script runs

    out = subprocess.run(
        ["git", "-C", str(Path(aim_cli.__file__).parent), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1GiB", help="size of each checkpoint (default 1GiB)")
    ap.add_argument("--s3-size", default="256MiB", help="size of the S3 checkpoints (default 256MiB)")
    ap.add_argument("--quick", action="store_true", help=f"a smoke run: --size {QUICK_SIZE}, S3 at most as large")
    ap.add_argument("--skip-s3", action="store_true", help="skip the S3 figures")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the table as JSON to FILE")
    ap.add_argument("--workdir", type=Path, help="work directory (default: a temporary one under the current)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--formats",
        default="1,2",
        help="the storage formats to compare, the baseline first (default 1,2; 2,3 puts format 3 beside format 2)",
    )
    args = ap.parse_args(argv)
    global FORMATS
    FORMATS = tuple(int(f) for f in args.formats.split(","))
    if not rb.AIM.exists():
        sys.exit(f"{rb.AIM} not found: run this with the project's environment (uv run python {sys.argv[0]})")
    size = parse_size(QUICK_SIZE if args.quick else args.size)
    s3_size = min(size, parse_size(args.s3_size)) if args.quick else parse_size(args.s3_size)

    parent = args.workdir or Path.cwd()
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".aim-format2-", dir=parent)).absolute()
    cache = rb.PageCache()
    load_before = os.getloadavg()[0]
    b = FormatBench(work, cache)
    moto = None
    s3: dict[str, dict[int, S3]] = {}
    try:
        local, about = measure_models(
            b, work, size, args.seed, "local", measure_local, {"bf16": checkpoints.VARIANTS, "random": ("v1", "v2")}
        )
        rb.rmtree(b.root)
        if not args.skip_s3:
            moto = rb.start_moto(b)
            s3, _ = measure_models(
                b, work, s3_size, args.seed, "S3 (moto)", measure_s3, {"bf16": ("v1",), "random": ("v1",)}
            )
    finally:
        if moto is not None:
            rb.stop_moto(b, moto)
        if not args.keep:
            rb.rmtree(work)

    rows = build_rows(local, s3)
    formats = {f: sorted({x[f].format for x in local.values()} | {x[f].format for x in s3.values()}) for f in FORMATS}
    columns = [
        f"format {f}" + ("" if formats[f] == [f] else f" (is format {', '.join(map(str, formats[f]))} here)")
        for f in FORMATS
    ]
    meta = {
        "aim_cli": aim_revision(),
        "format_option": b.format_option,
        "repository_formats": formats,
        "size": size,
        "s3_size": None if args.skip_s3 else s3_size,
        "models": about,
        "page_cache": cache.state,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(
        f"format benchmark ({', '.join(map(str, FORMATS))}), aim_cli {meta['aim_cli']}: "
        + "; ".join(f"{k}: {v}" for k, v in about.items())
        + ". "
        + (
            ""
            if b.format_option
            else f"This aim_cli has no `repo create --format`: both columns are the format "
            f"of a new repository ({', '.join(map(str, formats[1]))}). "
        )
        + (f"S3 through moto at {s3_size / MiB:.0f} MiB. " if s3 else "")
        + f"One run per figure; pulls {cache.state}. {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end. Targets are "
        f"issue 10's, for format 2."
    )
    print()
    rb.print_markdown(["model", "figure", *columns, "target", "met (format 2)"], [r.markdown() for r in rows])
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "meta": meta,
                    "rows": [r.json() for r in rows],
                    "measurements": {
                        "local": {k: {f: measurement_json(x) for f, x in v.items()} for k, v in local.items()},
                        "s3": {k: {f: measurement_json(x) for f, x in v.items()} for k, v in s3.items()},
                    },
                },
                indent=2,
            )
            + "\n"
        )
    return 0 if all(r.met is not False for r in rows) else 1


def measurement_json(m: Local | S3) -> dict:
    """The raw measurements behind the table (seconds, CPU, RSS, bytes, the commands' JSON)."""

    def result(r: rb.Result) -> dict:
        return {"seconds": r.seconds, "cpu": r.cpu, "maxrss": r.maxrss}

    out = {}
    for key, value in vars(m).items():
        if isinstance(value, rb.Result):
            out[key] = result(value)
        elif key == "deltas":
            out[key] = {v: asdict(d) for v, d in value.items()}
        else:
            out[key] = value
    return out


if __name__ == "__main__":
    sys.exit(main())
