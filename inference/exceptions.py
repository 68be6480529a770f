"""Errors of the inference services. Each carries the HTTP status the API answers with and, where an
input caused it, the name of the request field (``features``, ``ticker``, ``instances[3]`` ...)."""

from __future__ import annotations


class InferenceError(Exception):
    status_code = 400

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict:
        out: dict = {"detail": f"{self.field}: {self.message}" if self.field else self.message}
        if self.field:
            out["errors"] = {self.field: [self.message]}
        return out


class InvalidInput(InferenceError):
    """The request is well-formed JSON but its values cannot be used (400)."""

    status_code = 400


class NotFound(InferenceError):
    """An unknown model, ticker or date (404)."""

    status_code = 404


class Conflict(InferenceError):
    """The request is valid but the registry's state does not allow it (409), e.g. no active version."""

    status_code = 409


class PayloadTooLarge(InferenceError):
    """Body or batch larger than the configured limits (413)."""

    status_code = 413


class ModelUnavailable(InferenceError):
    """The model exists but cannot serve now: it failed to load, or was unloaded (503)."""

    status_code = 503
