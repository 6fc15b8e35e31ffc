"""``appliance status``: the health of the box at a glance, for people and for scripts.

Library API:

* :func:`collect_status` (``snapshot=None, instance=None, store=None, docker=None,
  max_inspects=4``) -> :class:`StatusReport` -- only reads (an interrupted upgrade is reported,
  never finished or undone here); never raises for an unhealthy or unreachable box (that is in
  the report); raises an ApplianceError only for bad input (a broken ``--snapshot`` directory).
* :class:`StatusReport` and its parts (:mod:`appliance.status.models`): the stable JSON
  schema ``appliance-status/1`` documented in ``docs/status.md``; ``report.exit_code`` is
  0 healthy, 1 degraded, 2 cannot tell (Docker unreachable, nothing installed).

Cheap by design (one Docker list call, bounded inspects, NVML rather than a tool per device);
see the module docstrings of :mod:`appliance.status.collect` and :mod:`appliance.status.services`.
"""

from __future__ import annotations

from appliance.status.collect import collect_status
from appliance.status.models import STATUS_FORMAT, Problem, StatusReport

__all__ = ["collect_status", "StatusReport", "Problem", "STATUS_FORMAT"]
