"""The one check of a PRNG key argument, so a mistaken key is named as such."""

import jax
import numpy as np


def check_key(key: object, caller: str) -> None:
    """Refuse (``TypeError``) what is not a JAX PRNG key: a typed key from
    ``jax.random.key`` (any shape, under ``jit`` too) or a raw ``uint32``
    ``(2,)`` key from ``jax.random.PRNGKey``."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return
    if dtype == np.uint32 and getattr(key, "shape", None) == (2,):
        return
    raise TypeError(
        f"{caller}: key must be a JAX PRNG key, e.g. key=jax.random.key(0), got "
        f"{type(key).__name__} {key!r}."[:300]
    )
