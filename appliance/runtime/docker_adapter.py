"""The Docker adapter: the only module that talks to the Docker engine (Docker SDK).

Everything else asks this module for what it needs. The SDK is imported lazily so
commands that do not need Docker start fast.
"""

from __future__ import annotations

import os

from appliance.errors import DockerUnavailable

DEFAULT_TIMEOUT_S = 30.0


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def connect(timeout_s: float = DEFAULT_TIMEOUT_S):
    """A connected ``docker.DockerClient``; raises DockerUnavailable with a fix hint."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.DockerClient(base_url=docker_host(), timeout=int(timeout_s))
        client.ping()
    except (DockerException, OSError) as exc:
        raise DockerUnavailable(
            f"cannot reach the Docker engine at {docker_host()}: {str(exc).splitlines()[0][:160]}",
            where="docker",
            fix="start it (systemctl start docker) or set DOCKER_HOST",
        ) from None
    return client


def engine_version(timeout_s: float = 5.0) -> str:
    """The engine's server version (e.g. '20.10.24'); raises DockerUnavailable."""
    client = connect(timeout_s)
    try:
        return str(client.version().get("Version", "unknown"))
    finally:
        client.close()
