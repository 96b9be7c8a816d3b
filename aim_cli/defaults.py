"""Defaults that the API, the pipelines and the CLI share, written once.

Light on purpose: the CLI reads it at start-up, before it imports anything heavy."""

#: Parallel transfers (blob uploads and downloads, audits' reads) when ``--jobs`` is not given, for
#: a local repository: eight keep a disk busy while bounding memory to 8 x the largest chunk.
DEFAULT_JOBS = 8
#: The same for an S3 repository, where ``--jobs`` is a ceiling: the transfers start at 4 and grow
#: while throughput grows, within a memory budget (backends/s3/concurrency.py).
DEFAULT_S3_JOBS = 32
