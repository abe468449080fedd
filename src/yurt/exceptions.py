"""Exceptions an endpoint raises to choose its answer, at the names and paths fal uses.

``from yurt.exceptions import AppException, FieldException`` is ``from fal.exceptions import
...`` with the import changed. How the runner answers each:

- ``AppException(message, status_code)``: ``status_code`` with ``{"detail": message}`` (and the
  exception's ``headers``). The same class as ``yurt.AppException``.
- ``FieldException(field, message, status_code=422, type="value_error")``: a validation error in
  FastAPI's shape, ``{"detail": [{"loc": ["body", field], "msg": message, "type": type}]}``;
  ``billable_units`` becomes the ``x-fal-billable-units`` header when set.
- ``GPUException`` and its out-of-memory subclasses: 503, which makes the router replace the
  runner (a GPU in a bad state serves no one) and retry the request elsewhere. An unhandled
  exception that is a CUDA out-of-memory error, or names a GPU library, is answered the same
  way; ``catch_gpu_exceptions`` turns them into these classes inside the endpoint.
- ``RequestCancelledException``: 499, as for a request cancelled by its caller.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any, Literal

from yurt.errors import AppException

__all__ = [
    "AppException",
    "CUDAOutOfMemoryException",
    "FieldException",
    "GPUException",
    "GPUOutOfMemoryException",
    "RequestCancelledException",
    "catch_gpu_exceptions",
    "gpu_failure",
]

# A GPU error's status: the router terminates a runner that answers 503 and retries elsewhere.
GPU_ERROR_STATUS = 503
CUDA_OOM_MESSAGE = "CUDA error: out of memory"
# Words that mark an error as coming from the GPU stack (fal's list, checked case-insensitively).
_GPU_MARKERS = (
    "cuda",
    "cudnn",
    "nvml",
    "nccl",
    "cublas",
    "cufft",
    "cusolver",
    "cusparse",
    "triton",
)


class FieldException(Exception):
    """One input field is invalid: answered as a validation error naming ``["body", field]``."""

    def __init__(
        self,
        field: str,
        message: str,
        status_code: int = 422,
        type: str = "value_error",
        billable_units: int | float | str | None = 0,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status_code = status_code
        self.type = type
        self.billable_units = billable_units

    def to_pydantic_format(self) -> dict[str, list[dict[str, Any]]]:
        """The body of the answer, as FastAPI words a validation error."""
        return {"detail": [{"loc": ["body", self.field], "msg": self.message, "type": self.type}]}

    def response_headers(self) -> dict[str, str]:
        """``x-fal-billable-units`` when the exception carries units (fal's formatting)."""
        if not self.billable_units:
            return {}
        units = float(self.billable_units)
        spec = ".0f" if isinstance(self.billable_units, int) else ".8f"
        return {"x-fal-billable-units": format(units, spec)}


class GPUException(AppException):
    """The GPU failed the request: answered 503, so that the runner is replaced."""

    def __init__(self, message: str = "GPU error", status_code: int = GPU_ERROR_STATUS) -> None:
        super().__init__(message, status_code)


class GPUOutOfMemoryException(GPUException):
    """A GPU ran out of memory."""


class CUDAOutOfMemoryException(GPUOutOfMemoryException):
    """CUDA ran out of memory."""

    def __init__(
        self, message: str = CUDA_OOM_MESSAGE, status_code: int = GPU_ERROR_STATUS
    ) -> None:
        super().__init__(message, status_code)


class RequestCancelledException(Exception):
    """The caller cancelled the request: answered 499."""

    def __init__(self, message: str = "Request cancelled by the client.") -> None:
        super().__init__(message)
        self.message = message


def _is_cuda_oom(exc: BaseException) -> bool:
    # PyTorch raises RuntimeError with one argument for these (the checks fal takes from
    # pytorch-lightning's and toma's memory utilities).
    if not isinstance(exc, RuntimeError) or len(exc.args) != 1 or not isinstance(exc.args[0], str):
        return False
    msg = exc.args[0]
    return (
        ("CUDA" in msg and "out of memory" in msg)
        or "NVML_SUCCESS == r INTERNAL ASSERT FAILED" in msg
        or "CUDNN_STATUS_INTERNAL_ERROR" in msg
        or "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED." in msg
    )


def gpu_failure(exc: BaseException) -> GPUException | None:
    """The GPU exception an unhandled ``exc`` stands for, or None if it is not a GPU error."""
    if isinstance(exc, GPUException):
        return exc
    if _is_cuda_oom(exc):
        return CUDAOutOfMemoryException()
    text = str(exc).lower()
    if any(marker in text for marker in _GPU_MARKERS):
        return GPUException()
    return None


class catch_gpu_exceptions(contextlib.ContextDecorator):
    """Turn GPU errors raised inside into ``GPUException``s (503); a context manager or a
    decorator: ``with catch_gpu_exceptions(): ...`` or ``@catch_gpu_exceptions()``."""

    def __enter__(self) -> catch_gpu_exceptions:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        if exc is None or isinstance(exc, GPUException) or not isinstance(exc, Exception):
            return False
        mapped = gpu_failure(exc)
        if mapped is not None:
            raise mapped from exc
        return False
