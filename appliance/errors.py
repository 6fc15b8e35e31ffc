"""Typed errors with a fixed, one-line user template.

Every error a user can cause is an ``ApplianceError``: it names *what* was wrong
(a file, a field, a device, a service) and *how to fix it*. The CLI prints
``error: <what>: <message> (fix: <hint>)`` on one line and exits with
``exit_code`` -- no traceback unless ``--debug``. Library code raises these;
it never calls ``sys.exit``.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of all user-facing errors. Exit code 2 = bad input or unusable environment."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.fix = fix

    def one_line(self) -> str:
        parts = []
        if self.where:
            parts.append(f"{self.where}: ")
        parts.append(self.message.replace("\n", " "))
        if self.fix:
            parts.append(f" (fix: {self.fix})")
        return "".join(parts)

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.one_line()


class UsageError(ApplianceError):
    """Bad command-line input or bad file contents."""


class SnapshotError(ApplianceError):
    """A node snapshot directory is missing or malformed."""


class CatalogError(ApplianceError):
    """The catalog (images/*.yaml) is invalid."""


class LicenseError(ApplianceError):
    """A license file is missing, tampered with, expired or for another node."""


class NoFitError(ApplianceError):
    """A requested model fits nowhere on this node (exit 3, with the explanation)."""

    exit_code = 3


class PreflightFailed(ApplianceError):
    """A preflight rule failed (exit 3)."""

    exit_code = 3


class DockerUnavailable(ApplianceError):
    """The Docker engine cannot be reached."""


class ProvisionError(ApplianceError):
    """An Ansible run failed."""

    exit_code = 1


class RuntimeFailure(ApplianceError):
    """Bringing up or converging the stack failed (e.g. a service never became healthy)."""

    exit_code = 1


class BundleError(ApplianceError):
    """An offline bundle is invalid, tampered with or not applicable."""


class StateError(ApplianceError):
    """The state database is unreadable or inconsistent."""
