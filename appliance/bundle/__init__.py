"""Offline upgrade bundles: one signed tar an admin carries to an air-gapped box.

Layout of the package (see docs/bundle.md for the format, docs/upgrade.md for apply):

- ``manifest``: the manifest model, versions, the tar member names;
- ``keys``: ed25519 key generation, signing, the node's trusted keys;
- ``reader``: opening a bundle safely (tar structure, signature, per-blob hashes, in parallel);
- ``dockersave``: splitting a ``docker save`` stream into blobs and rebuilding one from blobs;
- ``spec`` and ``create``: building a bundle (full or delta) from a YAML spec;
- ``contentstore``: the node's content-addressed blob store under ``<data_dir>/blobs``;
- ``apply``: the journaled upgrade / rollback state machine and crash recovery.

Nothing here has side effects at import time; Docker is reached only through
``appliance.runtime.docker_adapter``.
"""
