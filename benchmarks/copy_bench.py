"""`model copy` of a version whose predecessor the destination already holds, against the push of
the same version over the same predecessor, measured in the same run (target: the copy
transfers <= 1.1x the bytes the push stores).

    uv run python benchmarks/copy_bench.py                        # 1 GiB versions, local -> local
    uv run python benchmarks/copy_bench.py --size 64MiB           # a quick look
    uv run python benchmarks/copy_bench.py --s3 --s3-size 256MiB  # also local -> S3 through moto

make_checkpoints.py writes v1 and v2 (near-identical safetensors checkpoints). For each
destination kind: ``push`` repository P gets v1, then v2 (v2's push stores its new chunks: the
baseline); ``src`` holds v1 and v2; destination D gets v1 by ``model copy``, then v2 by ``model
copy`` (the figure: the bytes that crossed, as stored, and their raw size). Every command is the
real console script, with ``--json``; both repositories are created by the command that first
writes them, so they have the same (default) format and chunking. The table also gives the
wall times (push hashes and chunks every byte of v2; copy reads only the manifests and the new
blobs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench_run

TARGET = 1.1


class Repos:
    """One model_repos.yaml naming the repositories of this benchmark."""

    def __init__(self, work: Path, env: dict):
        self.work = work
        self.env = env
        self.config = work / "model_repos.yaml"
        self.entries: dict[str, str] = {}

    def add_local(self, name: str) -> str:
        shutil.rmtree(self.work / name, ignore_errors=True)
        return self._add(name, f"{{type: local, path: {self.work / name}}}")

    def add_s3(self, name: str, endpoint: str, bucket: str) -> str:
        return self._add(name, f"{{type: s3, path: s3://{bucket}/{name}, endpoint_url: {endpoint}, region: us-east-1}}")

    def _add(self, name: str, entry: str) -> str:
        self.entries[name] = entry
        self.config.write_text("repos:\n" + "".join(f"  {n}: {e}\n" for n, e in self.entries.items()))
        return name

    def aim(self, *args: str) -> bench_run.Result:
        """``aim_cli ARGS --json`` (push and copy: also ``-q``)."""
        quiet = ["-q"] if args[1] in ("push", "copy") else []
        return bench_run.run([str(bench_run.AIM), "--config", str(self.config), *args, "--json", *quiet], self.env)


def measure(repos: Repos, ck: dict, src: str, push_repo: str, dst: str) -> dict:
    """Push v1, v2 into ``src`` and into ``push_repo`` (the baseline); copy v1, then v2, from
    ``src`` into ``dst``."""
    v1, v2 = (Path(v["dir"]) for v in ck["versions"][:2])
    for tag, version in (("v1", v1), ("v2", v2)):
        repos.aim("model", "push", src, "m", str(version), "--tag", tag)
    push1 = repos.aim("model", "push", push_repo, "m", str(v1), "--tag", "v1")
    push = repos.aim("model", "push", push_repo, "m", str(v2), "--tag", "v2")
    copy1 = repos.aim("model", "copy", src, "m", dst, "--tag", "v1")
    copy = repos.aim("model", "copy", src, "m", dst, "--tag", "v2")
    p, c = push.json(), copy.json()
    src_digests = {v["tag"]: v["digest"] for v in repos.aim("model", "versions", src, "m").json()}
    dst_digests = {v["tag"]: v["digest"] for v in repos.aim("model", "versions", dst, "m").json()}
    assert dst_digests == src_digests, (src_digests, dst_digests)
    return {
        "push_stored": p["new_stored_bytes"],
        "push_raw": p["new_bytes"],
        "push_s": push.seconds,
        "copy_stored": c["stored_bytes"],
        "copy_read": c["read_bytes"],
        "copy_raw": c["raw_bytes"],
        "copy_blobs": c["blobs"],
        "copy_s": copy.seconds,
        "push1_s": push1.seconds,
        "copy1_s": copy1.seconds,
        "v1_bytes": copy1.json()["raw_bytes"],
    }


def rows(kind: str, m: dict) -> list[bench_run.Row]:
    ratio = m["copy_stored"] / m["push_stored"]
    raw_ratio = m["copy_raw"] / m["push_raw"]
    return [
        bench_run.Row(
            f"{kind}: copy of v2 over v1, bytes stored",
            bench_run.mib(m["copy_stored"]),
            f"push of v2 over v1 stores {bench_run.mib(m['push_stored'])}",
            f"{ratio:.3f}x",
            f"<= {TARGET}x",
            ratio <= TARGET,
        ),
        bench_run.Row(
            f"{kind}: the same, bytes read from the source",
            bench_run.mib(m["copy_read"]),
            bench_run.mib(m["push_stored"]),
            f"{m['copy_read'] / m['push_stored']:.3f}x",
            "—",
            None,
        ),
        bench_run.Row(
            f"{kind}: the same, raw chunk bytes ({m['copy_blobs']} blobs)",
            bench_run.mib(m["copy_raw"]),
            f"push's new chunks {bench_run.mib(m['push_raw'])}",
            f"{raw_ratio:.3f}x",
            "—",
            None,
        ),
        bench_run.Row(
            f"{kind}: wall time",
            f"{m['copy_s']:.2f} s",
            f"push {m['push_s']:.2f} s",
            f"{m['copy_s'] / m['push_s']:.2f}x",
            "—",
            None,
        ),
        bench_run.Row(
            f"{kind}: v1 ({bench_run.mib(m['v1_bytes'])}) into an empty repository, wall time",
            f"{m['copy1_s']:.2f} s",
            f"push {m['push1_s']:.2f} s",
            f"{m['copy1_s'] / m['push1_s']:.2f}x",
            "—",
            None,
        ),
    ]


def print_table(table: list[bench_run.Row]) -> None:
    header = ["figure", "model copy", "baseline: model push", "ratio", "target", "met"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in table:
        print("| " + " | ".join(r.cells()) + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1GiB", help="size of one version, local -> local (default 1GiB)")
    ap.add_argument("--s3", action="store_true", help="also local -> S3 through a moto server")
    ap.add_argument("--s3-size", default="256MiB", help="size of one version through moto (default 256MiB)")
    ap.add_argument("--work", type=Path, default=None, help="work directory (default: a temporary one here)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)

    work = (args.work or Path(tempfile.mkdtemp(prefix="copy-bench-", dir="."))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    bench = bench_run.Bench(work, 1, bench_run.PageCache())
    moto = None
    table: list[bench_run.Row] = []
    try:
        bench_run.make(["--size", args.size, "--versions", "2", "--out", str(work / "ck")])
        ck = json.loads((work / "ck" / "changes.json").read_text())
        repos = Repos(work, bench.env)
        local = measure(repos, ck, repos.add_local("src"), repos.add_local("pushed"), repos.add_local("dst"))
        table += rows(f"local -> local, {args.size}", local)
        if args.s3:
            moto = bench_run.start_moto(bench)
            endpoint, client = bench.s3
            bucket = f"copy-bench-{uuid.uuid4().hex[:12]}"
            client.create_bucket(Bucket=bucket)
            bench.buckets.append(bucket)
            bench_run.make(["--size", args.s3_size, "--versions", "2", "--out", str(work / "ck-s3")])
            ck = json.loads((work / "ck-s3" / "changes.json").read_text())
            repos = Repos(work, bench.env)
            s3 = measure(
                repos,
                ck,
                repos.add_local("src-s3"),
                repos.add_s3("pushed", endpoint, bucket),
                repos.add_s3("dst", endpoint, bucket),
            )
            table += rows(f"local -> S3 (moto), {args.s3_size}", s3)
    finally:
        if moto is not None:
            bench.drop_buckets()
            moto.terminate()
            moto.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(table)
    return 0 if all(r.met is not False for r in table) else 1


if __name__ == "__main__":
    sys.exit(main())
