"""Building a model's initial parameters in one quick compilation (private).

Run eagerly, a model's constructor compiles every initialiser call of a new
shape on its own (``jax.random.uniform`` and friends are jitted functions).
Traced together they compile once, and since initialisers run once, with
XLA:CPU's quick-to-compile options (``zoo._compiler_options``). Both draw the
same bits
(``tests/test_models.py`` checks every preset against the eager construction).
"""

import copy
from collections.abc import Callable
from typing import Any

import equinox as eqx
from jaxtyping import PRNGKeyArray

from .._compiler_options import initialiser_options, jit_with_options
from ._abstract import AbstractModel

ModelAndState = tuple[AbstractModel, eqx.nn.State]


class _Config:
    """Constructor arguments, hashable by value (a static argument of ``jit``)."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs
        self._frozen = _freeze(kwargs)

    def __hash__(self) -> int:
        return hash(self._frozen)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Config) and self._frozen == other._frozen


def _freeze(value: Any) -> Any:
    """``value`` as nested tuples, each tagged with its container's type."""
    if isinstance(value, dict):
        return ("dict", tuple((k, _freeze(v)) for k, v in sorted(value.items())))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    hash(value)  # TypeError for anything else unhashable
    return (type(value).__name__, value)


_static_parts: dict[tuple[Callable[..., AbstractModel], _Config], Any] = {}
"""The non-array part of each model built, recorded while it is traced."""


def _arrays(
    key: PRNGKeyArray, constructor: Callable[..., AbstractModel], config: _Config
) -> Any:
    model_and_state = eqx.nn.make_with_state(constructor)(
        **copy.deepcopy(config.kwargs), key=key
    )
    arrays, static = eqx.partition(model_and_state, eqx.is_array)
    _static_parts[constructor, config] = static
    return arrays


_arrays_compiled = jit_with_options(initialiser_options)(_arrays)


def initialise(
    constructor: Callable[..., AbstractModel],
    kwargs: dict[str, Any],
    key: PRNGKeyArray,
) -> ModelAndState:
    """``eqx.nn.make_with_state(constructor)(**kwargs, key=key)``, compiled once.

    Arguments that cannot be hashed by value fall back to the eager call.
    """
    try:
        config = _Config(kwargs)
    except TypeError:
        return eqx.nn.make_with_state(constructor)(**kwargs, key=key)
    arrays = _arrays_compiled(key, constructor, config)
    return eqx.combine(arrays, _static_parts[constructor, config])
