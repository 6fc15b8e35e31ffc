"""The rules that turn facts into problems, each with a fix an admin can act on.

Severity decides the exit code: any ``error`` makes the box *degraded* (exit 1); a
``warning`` is shown but the box still counts as healthy (a license expiring next month,
a disk at 91%, a service still starting); ``info`` is for the record (a recovered upgrade).
Problems about several devices of one vendor are grouped, so an 8-NPU box with an old
driver shows one line, not eight.
"""

from __future__ import annotations

from appliance.status.models import Problem, ServiceStatus

LICENSE_WARN_DAYS = 30


def _logs(name: str) -> str:
    return f"`appliance logs {name}`"


# ---- services --------------------------------------------------------------------------------
def service_problems(services: list[ServiceStatus], facts: dict[str, dict], *, desired: str) -> list[Problem]:
    if desired in ("down", "purged"):
        stopped = [s.name for s in services if s.state != "running"]
        if stopped:
            return [Problem(severity="error", code="stack_down", subject="stack",
                            message=f"the stack was stopped with `appliance down` ({len(stopped)} service(s) "
                                    "not running)", fix="start it again: `appliance up`")]
    out: list[Problem] = []
    for s in services:
        f = facts.get(s.name, {})
        if s.state == "unknown":
            continue
        if s.note and s.note.startswith("held:"):
            if s.state != "running":
                out.append(Problem(severity="warning", code="service_held", subject=s.name,
                                   message=f"stopped on request ({s.note[6:].strip()})",
                                   fix="start it again: `appliance up`"))
            continue
        if s.state == "missing":
            out.append(Problem(severity="error", code="service_missing", subject=s.name,
                               message="its container is gone",
                               fix="`appliance up` recreates it (the node agent does so within one interval)"))
        elif s.state == "restarting":
            out.append(Problem(severity="error", code="service_restarting", subject=s.name,
                               message=_crash_text("keeps crashing", s, f),
                               fix=f"see why in {_logs(s.name)}; then `appliance up`"))
        elif s.state in ("exited", "dead", "created"):
            what = {"created": "was created but never started"}.get(s.state, "is stopped")
            out.append(Problem(severity="error", code="service_stopped", subject=s.name,
                               message=_crash_text(what, s, f),
                               fix=f"`appliance up` starts it (the node agent does so within one interval); "
                                   f"if it stops again see {_logs(s.name)}"))
        elif s.state == "paused":
            out.append(Problem(severity="error", code="service_paused", subject=s.name, message="is paused",
                               fix=f"`docker unpause {s.container or s.name}`"))
        elif s.state == "running" and s.health == "unhealthy":
            detail = f": {f['health_output']}" if f.get("health_output") else ""
            out.append(Problem(severity="error", code="service_unhealthy", subject=s.name,
                               message=f"fails its health check{detail}",
                               fix=f"see {_logs(s.name)}; the node agent restarts it after repeated failures"))
        elif s.state == "running" and s.health == "starting":
            again = f"restarted {s.restarts} time(s); " if s.restarts else ""
            out.append(Problem(severity="warning", code="service_starting", subject=s.name,
                               message=f"{again}is starting (not healthy yet)",
                               fix=f"wait; if it stays so, see {_logs(s.name)}"))
        elif s.state == "running" and s.restarts:
            out.append(Problem(severity="warning", code="service_restarted", subject=s.name,
                               message=f"restarted {s.restarts} time(s); up for {_ago(s.uptime_s)}",
                               fix=f"see why in {_logs(s.name)}"))
        if s.state == "running" and not s.up_to_date:
            out.append(Problem(severity="error", code="release_inconsistent", subject=s.name,
                               message=f"runs a container of release {s.release or '?'} that differs from the active "
                                       "release's definition",
                               fix="`appliance up` converges it to the active release"))
        if s.note and s.note.startswith("degraded:"):
            out.append(Problem(severity="error", code="service_degraded", subject=s.name,
                               message=s.note[len("degraded:"):].strip(),
                               fix="check the hardware with `appliance detect`; re-plan with `appliance init --yes` "
                                   "if a device is gone for good"))
    return out


def _crash_text(what: str, s: ServiceStatus, f: dict) -> str:
    parts = [what]
    if f.get("oom_killed"):
        parts.append("killed for running out of memory")
    elif f.get("exit_code") not in (None, 0) or s.state in ("exited", "dead"):
        if f.get("exit_code") is not None:
            parts.append(f"exit code {f['exit_code']}")
    if f.get("restarts"):
        parts.append(f"{f['restarts']} restart(s)")
    if f.get("error"):
        parts.append(str(f["error"])[:160])
    return parts[0] + (f" ({', '.join(parts[1:])})" if parts[1:] else "")


def _ago(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def orphan_problems(services: list[ServiceStatus], release_services: set[str]) -> list[Problem]:
    return [Problem(severity="warning", code="release_inconsistent", subject=s.name,
                    message="a container of this instance that the active release does not have",
                    fix="`appliance up` removes it")
            for s in services if s.name not in release_services and s.state != "missing"]


# ---- accelerators and drivers ---------------------------------------------------------------
def _group(accs) -> dict[str, list]:
    out: dict[str, list] = {}
    for a in accs:
        out.setdefault(a.vendor, []).append(a)
    return out


def _indices(accs) -> str:
    return ",".join(str(a.index) for a in accs)


def accelerator_problems(accs, *, plan=None, used_vendors: set[str] = frozenset(), compat_for=None) -> list[Problem]:
    """Driver missing, driver/runtime mismatch, driver changed since the plan, unhealthy devices.

    ``compat_for(backend)`` returns the catalog's BackendCompat (None: not checked).
    """
    out: list[Problem] = []
    planned = {g.get("vendor"): g for g in ((plan.node or {}).get("accelerators") or [])} if plan else {}
    for vendor, group in _group(accs).items():
        subject = f"accelerators {vendor}:{_indices(group)}"
        needed = vendor in used_vendors
        no_driver = [a for a in group if not a.driver_version]
        if no_driver:
            hint = next((h for a in no_driver for h in a.hints), None)
            out.append(Problem(severity="error" if needed else "warning", code="driver_missing",
                               subject=f"accelerators {vendor}:{_indices(no_driver)}",
                               message=f"no {vendor} driver is loaded"
                                       + ("; services planned on these devices cannot run" if needed else ""),
                               fix=hint or "install the driver: `appliance provision`"))
        for health in ("error", "warning"):
            bad = [a for a in group if a.health == health and a.driver_version]
            if bad:
                hint = next((h for a in bad for h in a.hints), None)
                out.append(Problem(severity=health, code="accelerator_unhealthy",
                                   subject=f"accelerators {vendor}:{_indices(bad)}",
                                   message=f"the {vendor} tool reports health '{health}'",
                                   fix=hint or "check the devices with `appliance detect` and the vendor tool"))
        first = next((a for a in group if a.driver_version), None)
        if first is None:
            continue
        if compat_for is not None:
            out.extend(_compat_problems(subject, first, compat_for, needed))
        was = planned.get(vendor)
        if was and was.get("driver_version") and was["driver_version"] != first.driver_version:
            out.append(Problem(severity="warning", code="driver_changed", subject=subject,
                               message=f"the {vendor} driver is {first.driver_version}; the release was planned for "
                                       f"{was['driver_version']}",
                               fix="re-plan for the new driver: `appliance init --yes` (or reinstall "
                                   f"{was['driver_version']} with `appliance provision`)"))
        if was and was.get("count") and len(group) < int(was["count"]):
            out.append(Problem(severity="error" if needed else "warning", code="device_missing",
                               subject=f"accelerators {vendor}",
                               message=f"{len(group)} of the {was['count']} {vendor} device(s) the release was planned "
                                       "for are present",
                               fix="check seating/power and `dmesg`; `appliance detect` lists what the node sees"))
    for vendor, was in planned.items():
        if vendor not in _group(accs) and was.get("count"):
            out.append(Problem(severity="error" if vendor in used_vendors else "warning", code="device_missing",
                               subject=f"accelerators {vendor}",
                               message=f"none of the {was['count']} {vendor} device(s) the release was planned for "
                                       "is present",
                               fix="check the hardware and driver (`appliance detect`), then `appliance init --yes`"))
    return out


def _compat_problems(subject: str, acc, compat_for, needed: bool) -> list[Problem]:
    from appliance.catalog.versions import at_least, in_range

    try:
        compat = compat_for(acc.backend)
    except Exception:  # noqa: BLE001 - a broken catalog must not hide the rest of status
        return []
    if compat is None:
        return []
    out = []
    sev = "error" if needed else "warning"
    runtime = acc.runtime.version if acc.runtime else None
    if compat.driver_min and not at_least(acc.driver_version, compat.driver_min):
        out.append(Problem(severity=sev, code="driver_runtime_mismatch", subject=subject,
                           message=f"driver {acc.driver_version} is older than the {compat.driver_min} the engine "
                                   "images need",
                           fix="upgrade the driver: `appliance provision` (from the offline bundle's packages)"))
    if runtime and (compat.runtime.min or compat.runtime.max) and not in_range(runtime, compat.runtime.min,
                                                                                 compat.runtime.max):
        rng = f">= {compat.runtime.min}" if compat.runtime.min else ""
        rng += (", " if rng and compat.runtime.max else "") + (f"<= {compat.runtime.max}" if compat.runtime.max else "")
        out.append(Problem(severity=sev, code="driver_runtime_mismatch", subject=subject,
                           message=f"{compat.runtime_name} {runtime} is outside the supported range ({rng})",
                           fix=f"install {compat.runtime_name} {compat.recommended_runtime or compat.runtime.min} "
                               "with `appliance provision`"))
    if runtime and compat.driver_runtime:
        # rows are newest runtime first: the first one not newer than ours names the driver it needs
        need = next((row.driver_min for row in compat.driver_runtime if at_least(runtime, row.runtime)), None)
        if need and not at_least(acc.driver_version, need):
            out.append(Problem(severity=sev, code="driver_runtime_mismatch", subject=subject,
                               message=f"{compat.runtime_name} {runtime} needs driver >= {need}; the node has "
                                       f"{acc.driver_version}",
                               fix="upgrade the driver (`appliance provision`) or install an older runtime"))
    return out


# ---- licenses --------------------------------------------------------------------------------
def license_problems(licenses, served_models: set[str]) -> list[Problem]:
    out = []
    for lic in licenses:
        covers = sorted(set(lic.models) & served_models)
        subject = f"license {lic.license_id or lic.path}"
        if not lic.valid:
            out.append(Problem(severity="error" if covers else "warning", code="license_invalid", subject=subject,
                               message=f"{lic.reason or 'not valid'}"
                                       + (f"; it covers served model(s) {', '.join(covers)}" if covers else ""),
                               fix="ask the vendor for a new license and `appliance license install FILE`"))
        elif lic.days_left is not None and lic.days_left <= LICENSE_WARN_DAYS:
            out.append(Problem(severity="warning", code="license_expiring", subject=subject,
                               message=f"expires in {lic.days_left} day(s) ({lic.expires_at})"
                                       + (f"; covers {', '.join(covers)}" if covers else ""),
                               fix="ask the vendor for a renewal and `appliance license install FILE`"))
    return out
