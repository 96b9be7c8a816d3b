"""Chunks found in local files are copied as runs (aim_cli/pull/copy_runs.py): one call for chunks
adjacent in both files, the runs of all files shared out by bytes, never one task per chunk."""

from hypothesis import given
from hypothesis import strategies as st

from aim_cli.pull.copy_runs import MAX_RUN, CopyRun, plan_copies, segments

KiB = 1 << 10


def _layout(sizes):
    offsets, at = [], 0
    for size in sizes:
        offsets.append(at)
        at += size
    return [(f"d{i}", size) for i, size in enumerate(sizes)], offsets


def test_adjacent_chunks_of_one_source_make_one_run_and_the_rest_is_fetched():
    chunks, offsets = _layout([100, 200, 300, 400, 500])
    found = {
        "d0": ("dest", "old", 0),
        "d1": ("dest", "old", 100),
        "d3": ("dest", "old", 600),
        "d4": ("dest", "old", 1000),
    }
    runs, fetch = plan_copies(chunks, offsets, range(5), found.get)
    assert fetch == [2]
    assert [(r.source_offset, r.offset, r.size, r.indexes) for r in runs] == [
        (0, 0, 300, [0, 1]),
        (600, 600, 900, [3, 4]),
    ]


def test_a_chunk_moved_in_its_source_or_in_another_file_starts_a_run():
    chunks, offsets = _layout([100, 100, 100, 100])
    found = {
        "d0": ("dest", "old", 0),
        "d1": ("dest", "old", 500),  # moved in the old file
        "d2": ("dest", "other", 600),  # another file
        "d3": ("reference", "other", 700),  # another source, same path
    }
    runs, fetch = plan_copies(chunks, offsets, range(4), found.get)
    assert fetch == [] and [r.indexes for r in runs] == [[0], [1], [2], [3]]


def test_chunks_already_in_place_split_runs():
    chunks, offsets = _layout([100, 100, 100])
    found = {f"d{i}": ("dest", "old", 100 * i) for i in range(3)}
    runs, _ = plan_copies(chunks, offsets, [0, 2], found.get)  # chunk 1 is already in the partial
    assert [r.indexes for r in runs] == [[0], [2]]


def test_a_run_stops_at_max_run():
    size = MAX_RUN // 4
    chunks, offsets = _layout([size] * 10)
    found = {f"d{i}": ("dest", "old", size * i) for i in range(10)}
    runs, _ = plan_copies(chunks, offsets, range(10), found.get)
    assert [len(r.indexes) for r in runs] == [4, 4, 2] and all(r.size <= MAX_RUN for r in runs)


@given(
    sizes=st.lists(st.integers(1, 8 * 1024 * KiB), min_size=1, max_size=60),
    missing=st.data(),
    moved=st.sets(st.integers(0, 59)),
    absent=st.sets(st.integers(0, 59)),
)
def test_runs_cover_each_found_chunk_once_contiguously(sizes, missing, moved, absent):
    chunks, offsets = _layout(sizes)
    indexes = sorted(missing.draw(st.sets(st.integers(0, len(sizes) - 1))))
    found = {
        d: ("dest", "old", offsets[i] + (7 if i in moved else 0)) for i, (d, _) in enumerate(chunks) if i not in absent
    }
    runs, fetch = plan_copies(chunks, offsets, indexes, found.get)
    covered = [i for r in runs for i in r.indexes]
    assert sorted(covered + fetch) == indexes and covered == sorted(covered)
    assert fetch == [i for i in indexes if chunks[i][0] not in found]
    for r in runs:
        assert r.indexes == list(range(r.indexes[0], r.indexes[-1] + 1))
        assert r.offset == offsets[r.indexes[0]] and r.source_offset == found[chunks[r.indexes[0]][0]][2]
        assert r.size == sum(sizes[i] for i in r.indexes)
        assert r.size <= MAX_RUN or len(r.indexes) == 1


@given(st.lists(st.integers(1, 100), min_size=0, max_size=50), st.integers(1, 2000))
def test_segments_keep_every_run_in_order_in_about_equal_shares(sizes, share):
    runs = [CopyRun("dest", "old", 0, 0, size, [i]) for i, size in enumerate(sizes)]
    groups = segments(runs, share)
    assert [r for g in groups for r in g] == runs and all(groups)
    total = sum(sizes)
    if runs:
        assert len(groups) <= max(1, -(-total // share))
    if total <= share:
        assert len(groups) <= 1


def test_four_equal_files_on_two_workers_are_copied_one_task_each_and_one_file_by_two():
    run = CopyRun("dest", "old", 0, 0, MAX_RUN, [0])
    files = [[run] * 16 for _ in range(4)]
    share = sum(r.size for f in files for r in f) // 2
    assert [len(segments(f, share)) for f in files] == [1, 1, 1, 1]
    assert len(segments(files[0], sum(r.size for r in files[0]) // 2)) == 2
