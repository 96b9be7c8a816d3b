"""Signatures of versions in the OpenSSF model-signing format (issue 12), made from the manifest.

A signature is a Sigstore bundle (media type v0.3) holding a DSSE envelope whose payload is an
in-toto Statement v1 with predicate type ``https://model_signing/signature/v1.0``: one resource
per file (path, algorithm, hex digest) and the serialization that produced them. This is what
``model_signing`` 1.1.1 writes (``_signing/signing.py`` ``Payload``, ``sign_ec_key.Signer``,
``sign_certificate.Signer``), so its verifier checks our bundles on a pulled directory and we
check its bundles against a version.

Modules, bottom to top: ``strict`` (hostile JSON read strictly), ``statement`` (the payload and
the digests it lists), ``keys`` (PEM keys, key hints and stored names, ECDSA over the DSSE
envelope), ``bundle`` (write, parse and describe bundles), ``files`` (files the user names),
``certificates`` (the certificate method's chains and roots), ``verify`` (checking signatures,
reading a version's stored ones) and ``sign`` (signing a version, importing a bundle).

Nothing is imported here: ``cryptography`` loads only with the submodules that need it.
"""
