"""License file models.

A license file is JSON: ``{"payload": {...}, "key_id": "...", "signature": "<base64>"}``.
The signature is ed25519 over ``b"appliance-license/1\\n"`` + the payload serialized with
sorted keys and no whitespace (:func:`appliance.licensing.core.canonical`), so any change
to any field (models, expiry, node) breaks it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LICENSE_FORMAT = "appliance-license/1"


class LicensePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["appliance-license/1"] = LICENSE_FORMAT
    license_id: str
    customer: str
    models: list[str] = Field(min_length=1, description="closed model ids this license enables")
    issued_at: str = Field(description="UTC, ISO 8601 (…Z)")
    expires_at: str = Field(description="UTC, ISO 8601 (…Z): not valid from this instant on")
    node_fingerprint: str | None = Field(default=None,
                                         description="only valid on this node (appliance license fingerprint)")
    features: list[str] = Field(default_factory=list)


class LicenseFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payload: LicensePayload
    key_id: str
    signature: str


class LicenseStatus(BaseModel):
    """The result of checking one license file (never raises for an invalid license)."""

    path: str | None = None
    license_id: str | None = None
    customer: str | None = None
    models: list[str] = Field(default_factory=list)
    expires_at: str | None = None
    node_fingerprint: str | None = None
    key_id: str | None = None
    valid: bool
    reason: str | None = Field(default=None, description="why it is not valid")
    days_left: int | None = None


class LicenseList(BaseModel):
    directory: str
    licenses: list[LicenseStatus] = Field(default_factory=list)
