"""Runtime shape checks: jaxtyping annotations enforced by beartype.

Checks are on by default. Under ``jax.jit`` they run while tracing only, so a
compiled step pays nothing for them. Turn them off with the environment variable
``ZOO_SHAPE_CHECKS=0`` (read at import), with :func:`set_shape_checks`, or for a
block of code with :func:`shape_checks`.
"""

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar, cast

from beartype import beartype
from jaxtyping import jaxtyped

from ._inputs import model_inputs

_P = ParamSpec("_P")
_R = TypeVar("_R")

_enabled: bool = os.environ.get("ZOO_SHAPE_CHECKS", "1").lower() not in {
    "0",
    "false",
    "no",
    "off",
}


def shape_checks_enabled() -> bool:
    """Whether zoo's runtime shape checks are on."""
    return _enabled


def set_shape_checks(enabled: bool) -> None:
    """Turn zoo's runtime shape checks on or off for the whole process.

    Args:
        enabled: ``True`` to check every public model call, ``False`` to skip it.
    """
    global _enabled
    _enabled = bool(enabled)


@contextlib.contextmanager
def shape_checks(enabled: bool) -> Iterator[None]:
    """Context manager that sets shape checks for the calls traced inside it.

    Example:
        >>> import zoo
        >>> with zoo.runtime.shape_checks(False):
        ...     assert not zoo.runtime.shape_checks_enabled()
        >>> zoo.runtime.shape_checks_enabled()
        True
    """
    global _enabled
    previous = _enabled
    _enabled = bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


def checked(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate a public call so its jaxtyping annotations are enforced.

    The check is skipped when :func:`shape_checks_enabled` is ``False``.
    """
    typechecked: Callable[..., Any] = jaxtyped(typechecker=beartype)(fn)

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if _enabled:
            return typechecked(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def checked_model_call(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate a model's ``__call__(self, x, ...)``: inputs by zoo's one rule
    (``zoo._inputs``: dtype, then shape, with the fix in the message), then the
    jaxtyping/beartype check of every annotation when enabled."""
    inner: Callable[..., Any] = checked(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        model, x, *rest = args
        return inner(model, model_inputs(model, x, batched=False), *rest, **kwargs)

    return cast(Callable[_P, _R], wrapper)
