"""The gateway's control side: API keys and the wiring of the gateway and sample apps.

The gateway service itself is ``images/gateway/`` (stdlib Python in the ``appliance/pyrt``
image); this package is what the CLI and the runtime call. Library API:

Keys (:mod:`appliance.gateway.keys`) -- all take an optional ``store=StateStore`` and
``export_dir`` (default ``<data_dir>/gateway``):

* ``create_key(name, models=[], expires="30d"|ISO|None, rpm=None, tokens_per_day=None,
  owner="admin") -> CreatedKey`` -- ``.key`` is the plaintext ``apk_<id>_<secret>``, returned
  once; the state keeps ``HMAC-SHA256(per-key salt, key)`` only. Re-exports ``keys.json``.
* ``list_keys(include_revoked=False) -> KeyList`` (with usage from the gateway's
  ``usage.json``), ``revoke_key(name) -> KeyInfo``, ``verify_key(key) -> KeyInfo | None``.
* ``export_keys_file(directory=None) -> Path`` -- (re)write ``<dir>/keys.json``, the
  gateway's verification file (ids, salts, hashes, scopes, limits; no secret). The runtime
  calls it before starting the gateway so the file exists on a fresh install.
* ``gateway_dir() -> Path`` -- ``<data_dir>/gateway``: bind it READ-WRITE at
  ``/etc/appliance/gateway`` in the gateway container; the runtime writes ``routes.json``
  there (``{"models": {served_name: "http://<service>:<port>"}}``), the CLI writes
  ``keys.json``, the gateway writes ``usage.json``. The gateway re-reads keys and routes
  within a second of a change (mtime poll), so neither needs a restart.

App keys (:mod:`appliance.gateway.wiring`):

* ``ensure_app_key(app, models, rpm=None, owner_uid=None) -> AppKey`` -- idempotent; the key
  lives in ``AppKey.secrets_dir/api_key`` (0600). The runtime binds ``secrets_dir`` read-only
  at ``/run/appliance``. ``ensure_app_keys(stack, catalog, store)`` does it for every app of a
  stack (the deploy pipeline calls it before converging).
* How each app is wired (ports, health path, data volume, model roles, its key's rate limit)
  is the catalog's ``apps.yaml`` and :func:`appliance.runtime.compose.compose`; endpoints of a
  stack are :meth:`appliance.runtime.models.StackSpec.endpoints`.
"""
