"""Host provisioning: preflight checks and the Ansible playbooks (through ansible-runner).

Entry points (import the submodule; nothing heavy is imported here):

- :func:`appliance.provision.preflight.run_preflight` -> ``PreflightReport``: ordered
  pass/warn/fail rules with fix hints; ``init`` and ``upgrade`` call it first.
- :func:`appliance.provision.site.provision` -> ``ProvisionReport``: run ``playbooks/site.yml``
  on this node (optionally into a root directory) or on every host of an Ansible inventory.
- :mod:`appliance.provision.runner`: the one ansible-runner adapter.
- :mod:`appliance.provision.compat`: the compatibility matrix and the offline package choice.

Docs: ``docs/provisioning.md``, ``docs/preflight.md``.
"""
