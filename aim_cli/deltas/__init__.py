"""Format 3's re-encoding, the pure parts (docs/design.md §3.5): ``pairing`` (which chunks of two
versions pair up) and ``policy`` (which chunks to re-encode against which, within the chain rules).
No storage I/O: push and `repo optimize` fetch, decide here, then store."""
