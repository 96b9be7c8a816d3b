"""A repository's signatures role: one Sigstore bundle per signer of a version, below
``models/<model>/signatures/<tag>/`` (signing/ makes and checks them; issue 12). A bundle is
stored exclusively and never replaced, and read within a bound."""

from __future__ import annotations

from collections.abc import Iterator

from aim_cli.errors import IntegrityError, KeyNotFoundError, NotFoundError, ObjectTooLargeError
from aim_cli.format.layout import MAX_SIGNATURE_BYTES, MODELS, SignatureKey, signature_key, signatures_prefix
from aim_cli.names import check_name
from aim_cli.repository.keys import StoredKeys


class Signatures:
    """The signatures of the repository ``keys`` reads."""

    def __init__(self, keys: StoredKeys):
        self.keys = keys
        self.backend = keys.backend
        self.name = keys.name

    def put_signature(self, model: str, tag: str, hint: str, bundle: bytes) -> bool:
        """Store one signer's bundle of the version, exclusively: False when that signer's is
        already there (signing again is "already signed"; a bundle is never replaced)."""
        return self.backend.put_if_absent(signature_key(model, tag, check_name("signer hint", hint)), bundle)

    def list_signatures(self, model: str, tag: str) -> list[str]:
        """The signer hints of the version's stored signatures, sorted. Anything else in its
        signatures/ directory is not a signature aim_cli wrote: `repo check` reports it."""
        prefix = signatures_prefix(check_name("model", model), check_name("tag", tag))
        return sorted(k.hint for k in self.keys.model_keys(prefix) if isinstance(k, SignatureKey))

    def iter_signature_keys(self) -> Iterator[SignatureKey]:
        """Every signature of the repository (one listing of models/), for `repo check`."""
        return (k for k in self.keys.model_keys(MODELS) if isinstance(k, SignatureKey))

    def get_signature(self, model: str, tag: str, hint: str, *, max_size: int = MAX_SIGNATURE_BYTES) -> bytes:
        """One stored bundle, read bounded by ``max_size`` (larger is damage, exit 5)."""
        key = signature_key(model, tag, hint)
        try:
            return self.backend.get(key, max_size=max_size)
        except KeyNotFoundError:
            raise NotFoundError(
                f"no signature {hint!r} of {model}:{tag} in repository {self.name!r}",
                f"`aim_cli model info {self.name} {model} --tag {tag}` lists its signatures",
            ) from None
        except ObjectTooLargeError:
            raise IntegrityError(
                f"signature {key} is larger than {max_size} bytes, so it is not one",
                "remove it from the storage and sign the version again",
            ) from None
