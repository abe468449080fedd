"""Tests for ``yurt.exceptions``: fal's exception names, and which errors are GPU errors."""

from __future__ import annotations

import pytest

import yurt
from yurt import exceptions
from yurt.exceptions import (
    CUDAOutOfMemoryException,
    FieldException,
    GPUException,
    GPUOutOfMemoryException,
    catch_gpu_exceptions,
    gpu_failure,
)


def test_app_exception_is_the_same_class_at_both_paths() -> None:
    """``yurt.exceptions.AppException`` is ``yurt.AppException``; GPU errors are AppExceptions."""
    assert exceptions.AppException is yurt.AppException
    assert issubclass(GPUException, yurt.AppException)
    assert issubclass(CUDAOutOfMemoryException, GPUOutOfMemoryException)


def test_field_exception_shape_and_billable_units() -> None:
    """FieldException words its error as FastAPI does, and formats units as fal does."""
    exc = FieldException("prompt", "too long", billable_units=2)
    assert exc.to_pydantic_format() == {
        "detail": [{"loc": ["body", "prompt"], "msg": "too long", "type": "value_error"}]
    }
    assert exc.status_code == 422
    assert exc.response_headers() == {"x-fal-billable-units": "2"}
    assert FieldException("a", "b", billable_units=0.5).response_headers() == {
        "x-fal-billable-units": "0.50000000"
    }
    assert FieldException("a", "b").response_headers() == {}


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RuntimeError("CUDA out of memory. Tried to allocate 20 MiB"), CUDAOutOfMemoryException),
        (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED."), CUDAOutOfMemoryException),
        (RuntimeError("NCCL error in: init"), GPUException),
        (ValueError("bad cublas handle"), GPUException),
        (ValueError("the prompt is empty"), None),
        (RuntimeError("out of memory"), None),
    ],
)
def test_gpu_failure_classifies_errors(error: Exception, expected: type | None) -> None:
    """CUDA out-of-memory errors and errors naming a GPU library are GPU errors (503)."""
    mapped = gpu_failure(error)
    if expected is None:
        assert mapped is None
    else:
        assert type(mapped) is expected
        assert mapped is not None and mapped.status_code == 503


def test_catch_gpu_exceptions_as_context_and_decorator() -> None:
    """catch_gpu_exceptions raises the GPU exception from the original; others pass through."""
    with pytest.raises(CUDAOutOfMemoryException) as info, catch_gpu_exceptions():
        raise RuntimeError("CUDA out of memory")
    assert isinstance(info.value.__cause__, RuntimeError)

    @catch_gpu_exceptions()
    def plain() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        plain()
