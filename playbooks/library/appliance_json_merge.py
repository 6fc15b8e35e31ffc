#!/usr/bin/python
"""Ansible module: merge owned keys into a JSON config file, keeping every key it does not own.

Why a module: Docker's ``daemon.json`` is shared with admins and other tools (registry
mirrors, ``nvidia-ctk runtime configure``...). Rewriting it from a template would drop their
keys. This merges ``settings`` recursively (objects merge, other values replace), writes only
when the result differs (so a second run reports ``changed=false``), keeps a backup of the
previous file, supports check mode with a diff, and refuses to touch a file that is not valid
JSON (it names the file instead of silently replacing it).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: appliance_json_merge
short_description: Merge keys into a JSON object file (idempotent, check mode, diff)
options:
  path: {type: path, required: true}
  settings: {type: dict, required: true}
  backup: {type: bool, default: true}
"""


def merge(base: dict, new: dict) -> dict:
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def render(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def main() -> None:
    module = AnsibleModule(
        argument_spec={"path": {"type": "path", "required": True},
                       "settings": {"type": "dict", "required": True},
                       "backup": {"type": "bool", "default": True}},
        supports_check_mode=True,
    )
    path = module.params["path"]
    before_text = ""
    current: dict = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            before_text = fh.read()
        if before_text.strip():
            try:
                current = json.loads(before_text)
            except ValueError as exc:
                module.fail_json(msg=f"{path} is not valid JSON ({exc}); fix or remove it, then re-run")
            if not isinstance(current, dict):
                module.fail_json(msg=f"{path} must hold a JSON object; fix or remove it, then re-run")
    merged = merge(current, module.params["settings"])
    after_text = render(merged)
    # unchanged when the data is equal, even if the admin's formatting differs
    changed = merged != current or not os.path.exists(path)
    result = {"changed": changed, "path": path, "config": merged,
              "diff": {"before": before_text, "after": after_text if changed else before_text,
                       "before_header": path, "after_header": path}}
    if changed and not module.check_mode:
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        if module.params["backup"] and os.path.exists(path):
            backup = f"{path}.{time.strftime('%Y%m%dT%H%M%S')}.bak"
            shutil.copy2(path, backup)
            result["backup_file"] = backup
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".daemon.json.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(after_text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
