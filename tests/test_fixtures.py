"""The tests stand on their own: their data is in tests/fixtures/, and git keeps it as it is.

No test reads the reference folder ``shared/`` beside the checkout (a fresh clone or CI may
not have it, or have another version); the snapshots' sysfs symlinks stay symlinks, relative
and inside the fixtures.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.support import FIXTURES, H200, TESTS

# the ways a test has spelled "the shared folder beside the checkout" (pieces joined so this
# file does not match itself)
_SHARED = re.compile("|".join([
    r"\.\./" + "shared",
    r"parents\[[0-9]\] */ *['\"]" + "shared['\"]",
    r"/ *['\"]" + "shared['\"] */ *['\"]fixtures",
    r"REPO\." + "parent",
]))


def test_no_test_reads_the_shared_folder():
    hits = [f"{p.relative_to(TESTS)}:{n}: {line.strip()}"
            for p in sorted(TESTS.rglob("*.py")) if FIXTURES not in p.parents
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if _SHARED.search(line)]
    assert hits == [], "use tests.support (tests/fixtures/) instead:\n" + "\n".join(hits)


def test_fixture_symlinks_are_relative_and_resolve_inside_the_fixtures():
    links = [Path(dirpath) / name for dirpath, dirnames, filenames in os.walk(FIXTURES)
             for name in dirnames + filenames if (Path(dirpath) / name).is_symlink()]
    bad = []
    for link in links:
        target = os.readlink(link)
        resolved = link.resolve()
        if os.path.isabs(target) or FIXTURES.resolve() not in resolved.parents or not resolved.exists():
            bad.append(f"{link.relative_to(FIXTURES)} -> {target}")
    assert links and bad == [], bad


def test_the_h200_capture_keeps_its_driver_symlinks():
    """As on the captured node (its README): each bound PCI function's `driver` is a symlink."""
    devices = H200 / "root/sys/bus/pci/devices"
    drivers = {bdf.name: os.readlink(bdf / "driver") for bdf in sorted(devices.iterdir())
               if (bdf / "driver").is_symlink()}
    assert drivers == {**{f"0000:00:0{i}.0": "../../../../bus/pci/drivers/virtio-pci" for i in range(1, 6)},
                       "0000:00:06.0": "../../../../bus/pci/drivers/nvidia"}
    assert not any(p.is_file() and not p.is_symlink() for p in devices.glob("*/driver"))
