"""Two pushes of one tag with different content at the same moment, over real HTTP to the
session's S3 server (tests/s3_fixtures.py): exactly one wins, the other gets TagExistsError (exit
4), and the stored manifest is the winner's, whole.

What decides the race is the conditional PUT of the manifest (``If-None-Match: *``,
docs/design.md §5); ``Repository.commit`` then reads the manifest back. The last tests inject a server that
ignores the condition (a fault-injecting ``S3Backend`` subclass, not a boto3 mock) and show what the
read-back catches, and what it cannot.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import blake3
import pytest

from aim_cli.backends.s3.backend import S3Backend
from aim_cli.errors import IntegrityError, TagExistsError
from aim_cli.format import manifest as mf
from aim_cli.format.layout import manifest_key
from aim_cli.pull.pipeline import pull
from aim_cli.push import PushResult, push
from aim_cli.repository import Repository
from tests.helpers import AIM, PUSH_LINE, base_env, describe, file_contents, random_bytes, write_model
from tests.s3_fixtures import s3_region, s3_repo_yaml

PREFIX = "repo"
LIBRARY_ROUNDS = 15
CLI_ROUNDS = 3
WAIT = 60  # seconds: an upper bound on every wait below, never a synchronisation delay


def make_source(root: Path, seed: int) -> dict[str, tuple[bytes, int]]:
    """A small model whose content depends on ``seed``; returns its tree (path -> bytes, mode)."""
    write_model(
        root,
        {
            "weights.safetensors": random_bytes(1_500_000, seed),
            "sub/extra.bin": random_bytes(300_000, seed + 10_000),
            "config.json": b'{"seed": %d}\n' % seed,
        },
    )
    return file_contents(root)


def file_digests(root: Path) -> dict[str, str]:
    return {rel: blake3.blake3(data).hexdigest() for rel, (data, _) in file_contents(root).items()}


class RecordingBackend(S3Backend):
    """A real S3Backend that records the outcome of each conditional create of a manifest (a
    probe, not a fault): it shows whether a round was decided by the server's If-None-Match."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.manifest_creates: list[tuple[str, bool]] = []

    def put_if_absent(self, key, data):
        created = super().put_if_absent(key, data)
        if key.startswith("models/"):
            self.manifest_creates.append((key, created))
        return created


def new_backend(cls, endpoint: str, bucket: str, **kwargs) -> S3Backend:
    return cls(bucket, PREFIX, endpoint_url=endpoint, region=s3_region(), max_connections=8, **kwargs)


def stored_manifest(s3_client, bucket: str, model: str, tag: str) -> tuple[bytes, mf.Manifest]:
    """The manifest as the bucket holds it, read with a plain client and decoded strictly."""
    raw = s3_client.get_object(Bucket=bucket, Key=f"{PREFIX}/{manifest_key(model, tag)}")["Body"].read()
    return raw, mf.decode(raw, where=f"{model}:{tag}")


def race(pushers) -> list[PushResult | BaseException]:
    """Run each ``pusher()`` in its own thread, all released together by a barrier; return what
    each returned or raised, in order."""
    barrier = threading.Barrier(len(pushers), timeout=WAIT)
    outcomes: list[PushResult | BaseException | None] = [None] * len(pushers)

    def run(i):
        barrier.wait()
        try:
            outcomes[i] = pushers[i]()
        except BaseException as e:
            outcomes[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(pushers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive(), "a push hung"
    return outcomes


# -- the race, through the library -----------------------------------------------------------------
def test_concurrent_pushes_of_one_tag_exactly_one_wins(tmp_path, s3_endpoint, s3_bucket, s3_client):
    backends = [new_backend(RecordingBackend, s3_endpoint, s3_bucket) for _ in range(2)]
    repos = [Repository(b, "team", jobs=4) for b in backends]
    repos[0].init()  # aim-repo.json exists before the rounds: each round races on its manifest only
    decided_by_server = 0
    try:
        for rnd in range(LIBRARY_ROUNDS):
            model = f"model-{rnd}"
            sources = [tmp_path / f"r{rnd}" / name for name in ("a", "b")]
            trees = [make_source(src, seed=rnd * 2 + i) for i, src in enumerate(sources)]
            assert trees[0] != trees[1]
            for b in backends:
                b.manifest_creates.clear()

            outcomes = race([lambda i=i: push(repos[i], model, "v1", sources[i], jobs=4) for i in range(2)])

            wins = [i for i, o in enumerate(outcomes) if isinstance(o, PushResult)]
            losses = [i for i, o in enumerate(outcomes) if isinstance(o, TagExistsError)]
            assert len(wins) == 1 and len(losses) == 1, f"round {rnd}: {outcomes!r}"
            w, loser = wins[0], losses[0]
            won, lost = outcomes[w], outcomes[loser]
            assert lost.exit_code == 4
            assert not won.already_pushed and won.new_bytes > 0

            # The stored manifest is the winner's: same bytes (digest), files and content.
            raw, stored = stored_manifest(s3_client, s3_bucket, model, "v1")
            assert mf.digest_of(raw) == won.digest
            assert {f.path: f.blake3 for f in stored.files} == file_digests(sources[w])
            assert stored.total_size == won.total_size
            # The loser was told which version holds the tag.
            assert won.digest[:16] in lost.message

            # Did both pushes reach the commit, so that the server's conditional PUT decided?
            creates = [c for b in backends for c in b.manifest_creates]
            if len(creates) == 2:
                assert sorted(created for _, created in creates) == [False, True]
                assert backends[w].manifest_creates == [(manifest_key(model, "v1"), True)]
                decided_by_server += 1

            # The winner's version pulls byte for byte, pinned to the winner's digest (each round:
            # the pull is cheap and it proves every blob the manifest names is there).
            dest = tmp_path / f"r{rnd}" / "pulled"
            got = pull(repos[loser], model, dest, tag="v1", digest=won.digest, jobs=4)
            assert got.digest == won.digest
            assert file_contents(dest) == trees[w]
    finally:
        for b in backends:
            b.close()
    # Both pushes start together and do the same work, so most rounds end at the conditional PUT;
    # the rest are lost earlier, to push's check for an existing tag. Require the former to happen.
    assert decided_by_server >= 1, "no round reached two concurrent manifest creates"


# -- the race, through the real CLI in two processes ------------------------------------------------
def test_concurrent_cli_pushes_exit_0_and_4(tmp_path, s3_endpoint, s3_bucket, s3_client):
    config = tmp_path / "model_repos.yaml"
    config.write_text(s3_repo_yaml("team", s3_endpoint, s3_bucket, PREFIX))
    for rnd in range(CLI_ROUNDS):
        model = f"cli-model-{rnd}"
        sources = [tmp_path / f"c{rnd}" / name for name in ("a", "b")]
        trees = [make_source(src, seed=1000 + rnd * 2 + i) for i, src in enumerate(sources)]
        procs = [
            subprocess.Popen(
                [
                    str(AIM),
                    "--config",
                    str(config),
                    "model",
                    "push",
                    "team",
                    model,
                    str(src),
                    "--tag",
                    "v1",
                    "--quiet",
                    "--jobs",
                    "4",
                ],
                cwd=tmp_path,
                env=base_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for src in sources
        ]
        results = []
        for p in procs:
            out, err = p.communicate(timeout=WAIT)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
        report = "\n".join(describe(r) for r in results)
        assert sorted(r.returncode for r in results) == [0, 4], report
        w = next(i for i, r in enumerate(results) if r.returncode == 0)
        loser = results[1 - w]
        line = loser.stderr.strip()
        assert "\n" not in line and "Traceback" not in line, report
        assert line.startswith("error: ") and "already exists" in line and "--tag" in line, report
        m = PUSH_LINE.search(results[w].stdout)
        assert m, report
        raw, stored = stored_manifest(s3_client, s3_bucket, model, "v1")
        assert mf.digest_of(raw) == m["digest"]
        assert m["digest"][:16] in line
        assert {f.path: f.blake3 for f in stored.files} == file_digests(sources[w])

        # Pull the winner's version through the CLI: byte for byte.
        dest = tmp_path / f"c{rnd}" / "pulled"
        res = subprocess.run(
            [
                str(AIM),
                "--config",
                str(config),
                "model",
                "pull",
                "team",
                model,
                str(dest),
                "--tag",
                "v1",
                "--digest",
                m["digest"],
                "--quiet",
            ],
            cwd=tmp_path,
            env=base_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert res.returncode == 0, describe(res)
        assert file_contents(dest) == trees[w]


# -- a server that ignores If-None-Match ------------------------------------------------------------
class SequencedBackend(S3Backend):
    """Fault injection around the manifest's conditional create.

    ``before`` and ``after`` run around the write of a manifest, so a test can interleave two
    pushes deterministically. With ``honour_condition=False`` the create is a plain PUT that
    always reports success: a server (or proxy) that drops ``If-None-Match``.
    """

    def __init__(self, *args, honour_condition: bool, before=None, after=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.honour_condition = honour_condition
        self.before = before or (lambda: None)
        self.after = after or (lambda: None)

    def put_if_absent(self, key, data):
        if not key.startswith("models/"):
            return super().put_if_absent(key, data)
        self.before()
        try:
            if self.honour_condition:
                return super().put_if_absent(key, data)
            self.put(key, data)
            return True
        finally:
            self.after()


def wait_for(event: threading.Event) -> None:
    assert event.wait(WAIT), "the other push never reached its step"


def test_ignored_condition_read_back_catches_an_overwrite_before_it(tmp_path, s3_endpoint, s3_bucket, s3_client):
    """Both pushes reach the commit; "first" writes its manifest, "last" overwrites it, and only
    then does "first" read back. The condition is ignored, so both writes report success; the
    read-back is what stops "first": it sees a manifest that is not its own and raises
    TagExistsError. "last" reads back its own bytes and wins. One version, one winner."""
    both_at_commit = threading.Barrier(2, timeout=WAIT)
    first_written, last_written = threading.Event(), threading.Event()

    def first_after():
        first_written.set()
        wait_for(last_written)  # hold first's read-back until last has overwritten

    def last_before():
        both_at_commit.wait()
        wait_for(first_written)

    first_backend = new_backend(
        SequencedBackend, s3_endpoint, s3_bucket, honour_condition=False, before=both_at_commit.wait, after=first_after
    )
    last_backend = new_backend(
        SequencedBackend, s3_endpoint, s3_bucket, honour_condition=False, before=last_before, after=last_written.set
    )
    first_repo, last_repo = Repository(first_backend, "team", jobs=4), Repository(last_backend, "team", jobs=4)
    first_repo.init()
    src_first, src_last = tmp_path / "first", tmp_path / "last"
    make_source(src_first, seed=1)
    last_tree = make_source(src_last, seed=2)
    try:
        first, last = race(
            [
                lambda: push(first_repo, "m", "v1", src_first, jobs=4),
                lambda: push(last_repo, "m", "v1", src_last, jobs=4),
            ]
        )
        assert isinstance(first, TagExistsError), first
        assert first.exit_code == 4
        assert isinstance(last, PushResult), last
        assert last.digest[:16] in first.message  # first saw last's manifest, not its own
        raw, stored = stored_manifest(s3_client, s3_bucket, "m", "v1")
        assert mf.digest_of(raw) == last.digest
        assert {f.path: f.blake3 for f in stored.files} == file_digests(src_last)
        pull(first_repo, "m", tmp_path / "pulled", tag="v1", digest=last.digest, jobs=4)
        assert file_contents(tmp_path / "pulled") == last_tree
    finally:
        first_backend.close()
        last_backend.close()


@pytest.mark.parametrize("honour_condition", [True, False], ids=["if-none-match", "condition-ignored"])
def test_overwrite_after_the_read_back(tmp_path, s3_endpoint, s3_bucket, s3_client, honour_condition):
    """ "late" checks that the tag is free before "early" writes it, then writes its own manifest
    only after "early" has committed and read back.

    With the conditional PUT (a real S3, moto) "late" gets 412 and TagExistsError: the stored
    manifest stays "early"'s. With the condition ignored, the read-back cannot help: "early" read
    its own bytes before the overwrite and "late" reads its own after it, so BOTH pushes report
    success and "early"'s version is silently replaced. The read-back is no substitute for
    If-None-Match; what still catches the substitution is a pull pinned to "early"'s digest."""
    late_at_commit, early_done = threading.Event(), threading.Event()

    def late_before():
        late_at_commit.set()
        wait_for(early_done)

    early_backend = new_backend(SequencedBackend, s3_endpoint, s3_bucket, honour_condition=honour_condition)
    late_backend = new_backend(
        SequencedBackend, s3_endpoint, s3_bucket, honour_condition=honour_condition, before=late_before
    )
    early_repo, late_repo = Repository(early_backend, "team", jobs=4), Repository(late_backend, "team", jobs=4)
    early_repo.init()
    src_early, src_late = tmp_path / "early", tmp_path / "late"
    early_tree = make_source(src_early, seed=3)
    make_source(src_late, seed=4)
    outcome: list = []

    def run_late():
        try:
            outcome.append(push(late_repo, "m", "v1", src_late, jobs=4))
        except BaseException as e:
            outcome.append(e)

    late_thread = threading.Thread(target=run_late)
    late_thread.start()
    try:
        wait_for(late_at_commit)  # late has passed push's "does the tag exist?" check
        early = push(early_repo, "m", "v1", src_early, jobs=4)
        early_done.set()
        late_thread.join(WAIT)
        assert not late_thread.is_alive()
        (late,) = outcome
        raw, _ = stored_manifest(s3_client, s3_bucket, "m", "v1")
        if honour_condition:
            assert isinstance(late, TagExistsError) and late.exit_code == 4, late
            assert early.digest[:16] in late.message
            assert mf.digest_of(raw) == early.digest
            pull(early_repo, "m", tmp_path / "pulled", tag="v1", digest=early.digest, jobs=4)
            assert file_contents(tmp_path / "pulled") == early_tree
        else:
            # The limitation, pinned: both succeed and the stored manifest is late's.
            assert isinstance(late, PushResult), late
            assert not early.already_pushed and not late.already_pushed
            assert mf.digest_of(raw) == late.digest != early.digest
            # Whoever pinned early's digest is protected: the pull refuses, downloading nothing.
            with pytest.raises(IntegrityError) as info:
                pull(early_repo, "m", tmp_path / "pulled", tag="v1", digest=early.digest, jobs=4)
            assert early.digest in info.value.message
            assert not (tmp_path / "pulled" / "weights.safetensors").exists()
    finally:
        early_done.set()
        late_thread.join(WAIT)
        early_backend.close()
        late_backend.close()
