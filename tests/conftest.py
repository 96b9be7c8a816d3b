"""Shared fixtures. The S3 server fixtures live in tests/s3_fixtures.py."""

pytest_plugins = ["tests.s3_fixtures"]
