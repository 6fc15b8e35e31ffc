#!/usr/bin/python
"""Ansible module: the installed version of a driver/runtime component, and whether it fits.

Why: the provisioning rule is "install a package only where the installed version does not
already match the compatibility matrix". The installed version lives on the managed host, so
it is read there: from version files under the root (``/sys/module/nvidia/version``,
``/usr/local/Ascend/driver/version.info``, dpkg's status file ...), from a version command
(only when the root is ``/``: a fake root has no programs), and from the marker the playbook
writes after it installed a package (a new kernel driver is only *loaded* after a reboot).
The component is satisfied when ANY source reports a version inside the range.

Versions compare as appliance/catalog/versions.py does: numbers numerically, ``rc``/``beta``/
``alpha`` before the release they precede (Huawei's ``24.1.rc3`` < ``24.1.0``), missing trailing
parts as zero.
"""

from __future__ import annotations

import json
import os
import re

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: appliance_component_version
short_description: Installed version of a component and whether it is in a version range
options:
  root: {type: str, default: /}
  sources:
    type: list
    elements: dict
    description: rows {path, regex} (file under root; regex group 1 = version) or {command, regex}
  marker: {type: str, description: JSON file (under root) written after an install, key "version"}
  min_version: {type: str}
  max_version: {type: str}
"""

# Mirrors appliance/catalog/versions.py (a module must be self-contained: Ansible ships it to
# the managed host). tests/provision checks that both order the same versions the same way.
_TOKEN = re.compile(r"(\d+)|([A-Za-z]+)")
_PRE = {"dev": -4, "a": -3, "alpha": -3, "b": -2, "beta": -2, "rc": -1, "t": -1}


def version_key(text: str) -> tuple:
    parts = []
    for number, word in _TOKEN.findall(str(text).strip().lstrip("vV")):
        if number:
            parts.append((int(number), 0, ""))
        else:
            low = word.lower()
            parts.append((_PRE[low], 0, "") if low in _PRE else (0, 1, low))
    while parts and parts[-1] == (0, 0, ""):
        parts.pop()
    return tuple(parts)


def compare(a: str, b: str) -> int:
    ka, kb = version_key(a), version_key(b)
    width = max(len(ka), len(kb))
    ka = ka + ((0, 0, ""),) * (width - len(ka))
    kb = kb + ((0, 0, ""),) * (width - len(kb))
    return (ka > kb) - (ka < kb)


def in_range(version: str, min_version: str | None, max_version: str | None) -> bool:
    """Inclusive on both ends; None is unbounded."""
    if min_version and compare(version, min_version) < 0:
        return False
    if max_version and compare(version, max_version) > 0:
        return False
    return True


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(1024 * 1024)
    except OSError:
        return None


def _extract(text: str, regex: str | None) -> str | None:
    if regex:
        m = re.search(regex, text, re.M)
        return m.group(1).strip() if m else None
    first = text.strip().splitlines()[:1]
    return first[0].strip() if first and first[0].strip() else None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "str", "default": "/"},
            "sources": {"type": "list", "elements": "dict", "default": []},
            "marker": {"type": "str", "default": None},
            "min_version": {"type": "str", "default": None},
            "max_version": {"type": "str", "default": None},
        },
        supports_check_mode=True,
    )
    p = module.params
    root = p["root"] or "/"
    found = []
    for src in p["sources"]:
        if src.get("path"):
            text = _read(os.path.join(root, src["path"].lstrip("/")))
            version = _extract(text, src.get("regex")) if text else None
            if version:
                found.append({"source": src["path"], "version": version})
        elif src.get("command") and os.path.realpath(root) == "/":
            argv = src["command"] if isinstance(src["command"], list) else src["command"].split()
            try:
                rc, out, err = module.run_command(argv)
            except Exception:  # noqa: BLE001 - a missing tool just means "not installed"
                continue
            version = _extract(out + "\n" + err, src.get("regex")) if rc == 0 else None
            if version:
                found.append({"source": " ".join(argv), "version": version})
    if p["marker"]:
        text = _read(os.path.join(root, p["marker"].lstrip("/")))
        try:
            version = json.loads(text).get("version") if text else None
        except ValueError:
            version = None
        if version:
            found.append({"source": p["marker"], "version": str(version)})
    satisfying = [f for f in found if in_range(f["version"], p["min_version"], p["max_version"])]
    installed = (satisfying or found or [{}])[0]
    module.exit_json(changed=False, installed=installed.get("version"), source=installed.get("source"),
                     satisfied=bool(satisfying), found=found)


if __name__ == "__main__":
    main()
