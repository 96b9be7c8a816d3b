"""Defaults that the API, the pipelines and the CLI share, written once.

Light on purpose: the CLI reads it at start-up, before it imports anything heavy."""

#: Parallel transfers (blob uploads and downloads, audits' reads) when ``--jobs`` is not given.
#: Eight keeps an S3 link busy while bounding memory to 8 x the largest chunk in flight.
DEFAULT_JOBS = 8
