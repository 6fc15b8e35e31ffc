"""Licenses for closed models: ed25519-signed files naming models, expiry and optionally a node.

- Vendor side: ``generate_keypair(out_dir)``, ``issue(private_key, models, expires_at,
  customer, node_fingerprint=None)`` (CLI: ``appliance license keygen`` / ``issue``).
- Box side: ``verify_file(path, now=, fingerprint=)``, ``install(path)`` (into
  ``<data_dir>/licenses/``), ``installed()``, ``entitlements(models, inventory=...)`` (what
  the planner asks), ``node_fingerprint(inventory)``.
- Trusted public keys: ``APPLIANCE_LICENSE_PUBKEYS`` (paths separated by ``os.pathsep``) or
  ``<data_dir>/trust/license-keys/*.pub``. No key is shipped in the repository.

Details and the file format: ``docs/licenses.md``. Importing this package does not import
``cryptography``; the functions do, when called.
"""

from __future__ import annotations

from appliance.licensing.core import entitlements, install, installed, issue, read, verify, verify_file
from appliance.licensing.fingerprint import node_fingerprint
from appliance.licensing.keys import generate_keypair, trusted_keys

__all__ = ["entitlements", "install", "installed", "issue", "read", "verify", "verify_file",
           "node_fingerprint", "generate_keypair", "trusted_keys"]
