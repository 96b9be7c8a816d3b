"""How results read (issue 20, item 6): summary lines within 100 columns in IEC units, right
plurals, full digests on their own line and 12 hex in listings, NEW beside STORED in `model
versions`, hints that name a command, and the bars of the long audits on a terminal."""

import re
from types import SimpleNamespace

from aim_cli.cli.render import SUMMARY_COLUMNS, plural
from aim_cli.progress import BYTES, _amount_columns
from tests.helpers import AIM, base_env, describe, ok, random_bytes, run, write_model
from tests.pull.test_transfer_kill import _run_on_a_terminal

MiB = 1 << 20
SI_UNITS = re.compile(r"\d (kB|KB|MB|GB|TB)\b|[kMGT]B/s")
HEX64 = re.compile(r"[0-9a-f]{64}")


def _aim(tmp_path, *args):
    return run(["--config", tmp_path / "model_repos.yaml", *args], cwd=tmp_path)


def _check_lines(text: str) -> None:
    """Every line fits, uses IEC units, and a full digest stands alone on a `digest:` line."""
    for line in text.splitlines():
        assert len(line) <= SUMMARY_COLUMNS, line
        assert not SI_UNITS.search(line), line
        if HEX64.search(line):
            assert re.fullmatch(r"digest: [0-9a-f]{64}", line), line


def test_summaries_fit_100_columns_in_iec_units_with_plurals(tmp_path):
    (tmp_path / "model_repos.yaml").write_text("repos:\n  r: {type: local, path: repo}\n")
    src = write_model(tmp_path / "src", {"w.bin": random_bytes(MiB, 1)})
    pushed = ok(_aim(tmp_path, "model", "push", "r", "m", src, "--tag", "v1")).stdout
    assert "1 file," in pushed and re.search(r"^digest: [0-9a-f]{64}$", pushed, re.M), pushed
    write_model(src, {"w.bin": random_bytes(MiB, 2), "b.txt": b"hi"})
    outputs = [pushed, ok(_aim(tmp_path, "model", "push", "r", "m", src, "--tag", "v2")).stdout]
    assert "2 files," in outputs[-1]
    dest = tmp_path / "dest"  # named relative to the working directory, as a user types it
    outputs.append(ok(_aim(tmp_path, "model", "pull", "r", "m", "dest", "--tag", "v1", "--delete")).stdout)
    assert "1 file, 1.0 MiB" in outputs[-1] and "deleted 0 files" in outputs[-1], outputs[-1]
    outputs.append(ok(_aim(tmp_path, "model", "verify", "r", "m", "--tag", "v1")).stdout)
    assert "m:v1: the 1 blob (1.0 MiB) intact" in outputs[-1], outputs[-1]

    # NEW (what the push added) beside STORED; digests of 12 hex in the listing.
    listing = ok(_aim(tmp_path, "model", "versions", "r", "m")).stdout
    header, *rows = listing.splitlines()
    assert header.split()[3:7] == ["SIZE", "STORED", "NEW", "FILES"], listing
    size = r"[\d.]+ (?:Bytes|KiB|MiB)"
    for row, files in zip(rows, ("1 file", "2 files"), strict=True):
        assert re.search(rf"\s{size}  +{size}  +{size}  +{files}  +[0-9a-f]{{12}}$", row), listing
    outputs.append(listing)

    # A stale directory: the hint names the command that fixes it.
    (dest / "stale.bin").write_bytes(b"x")
    res = _aim(tmp_path, "model", "verify", "r", "m", "--tag", "v1", "--local", "dest")
    assert res.returncode == 5, describe(res)
    assert "1 extra file;" in res.stderr and "`aim_cli model pull r m dest --tag v1 --delete`" in res.stderr

    outputs.append(ok(_aim(tmp_path, "model", "delete-version", "r", "m", "--tag", "v1")).stdout)
    outputs.append(ok(_aim(tmp_path, "repo", "check", "r")).stdout)
    assert "repository 'r': 1 version, " in outputs[-1] and "unreferenced: 1 blob, " in outputs[-1], outputs[-1]
    outputs.append(ok(_aim(tmp_path, "repo", "gc", "r")).stdout)
    assert re.search(r"^deleted 1 blob, freed 1\.0 MiB$", outputs[-1], re.M), outputs[-1]
    for text in outputs:
        _check_lines(text)


def test_plural():
    assert [plural(n, "file") for n in (0, 1, 2)] == ["0 files", "1 file", "2 files"]
    assert plural(1, "alias", "aliases") == "1 alias" and plural(3, "alias", "aliases") == "3 aliases"


def test_the_bar_writes_rates_in_iec_units():
    """rich's own TransferSpeedColumn writes MB/s beside DownloadColumn's MiB: ours does not."""
    amount, speed = _amount_columns(BYTES)
    task = SimpleNamespace(finished_speed=None, speed=3.5 * MiB, completed=MiB, total=8 * MiB)
    assert speed.render(task).plain == "3.5 MiB/s"
    assert amount.render(task).plain == "1.0/8.0 MiB"
    counted = _amount_columns("manifests")
    assert counted[1].render(task).plain == "manifests"


def test_repo_check_and_gc_draw_a_bar_on_a_terminal_only(tmp_path):
    cfg = tmp_path / "model_repos.yaml"
    cfg.write_text("repos:\n  r: {type: local, path: repo}\n")
    src = write_model(tmp_path / "src", {"w.bin": random_bytes(2 * MiB, 3)})
    ok(_aim(tmp_path, "model", "push", "r", "m", src, "--tag", "v1", "--quiet"))
    code, drawn = _run_on_a_terminal([str(AIM), "--config", str(cfg), "repo", "check", "r", "--read-data"])
    assert code == 0, drawn
    drawn = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", drawn)  # the terminal's colours and cursor moves
    # The manifests read, counted, then the blobs read, in bytes.
    assert b"read manifests" in drawn and re.search(rb"[01]/1 manifests", drawn), drawn
    assert b"check" in drawn and b"2.0/2.0 MiB" in drawn, drawn
    code, drawn = _run_on_a_terminal([str(AIM), "--config", str(cfg), "repo", "gc", "r", "--quiet"])
    assert code == 0 and b"manifests" not in drawn and b"deleted 0 blobs" in drawn, drawn
    res = run(["--config", cfg, "repo", "gc", "r"], cwd=tmp_path, env=base_env())
    assert ok(res).stderr == ""
