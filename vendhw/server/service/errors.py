"""The API's refusal: an HTTP status and a stable code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vendhw.errors import VendhwError


class ApiError(VendhwError):
    """A refusal with an HTTP status and a stable, machine-readable ``code``."""

    def __init__(self, status: int, code: str, detail: str = "",
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        self.status = status
        self.code = code
        self.detail = detail or code.replace("_", " ")
        self.headers = dict(headers or {})
        self.extra = extra
        super().__init__(f"{status} {code}: {self.detail}")

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}
