"""The URL a published service is reached at: one rule for the models and the light views.

Why its own tiny module: :class:`appliance.runtime.models.ServiceSpec` (pydantic) and
:class:`appliance.runtime.views.ServiceView` (plain JSON, for fast readers such as ``status``)
both answer ``endpoint()``; the rule -- loopback for "every interface", brackets for IPv6,
``https`` behind the box's certificate -- must not be written twice.
"""

from __future__ import annotations


def endpoint_url(host_ip: str | None, host_port: int | None, tls: bool | None = False) -> str | None:
    """``http(s)://host:port`` of a published service (None when it publishes nothing)."""
    if host_port is None:
        return None
    host = host_ip if host_ip not in (None, "0.0.0.0", "::") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{host_port}"
