"""Defaults that the API, the pipelines and the CLI share, written once.

Light on purpose: the CLI reads it at start-up, before it imports anything heavy."""

#: Parallel transfers (blob uploads and downloads, audits' reads) when ``--jobs`` is not given, for
#: a local repository: eight keep a disk busy while bounding memory to 8 x the largest chunk.
DEFAULT_JOBS = 8


#: The same for an S3 repository, where ``--jobs`` is a ceiling: the transfers start at 16 and grow
#: while throughput grows, within a memory budget (backends/s3/concurrency.py).
DEFAULT_S3_JOBS = 32


def default_local_push_jobs() -> int:
    """``--jobs`` of a push to a local repository when not given: the cores + 2, at most
    DEFAULT_JOBS. Each upload thread also encodes its chunk (compression is CPU, the local write
    is not), so threads beyond the cores only contend. Measured on 2 cores (1 GiB of
    benchmarks/run.py's data, three alternating rounds, median): --jobs 2-4 pushed in 1.58-1.66 s,
    --jobs 8 in 1.83 s with 10% more CPU."""
    import os

    return min(DEFAULT_JOBS, (os.cpu_count() or 2) + 2)
