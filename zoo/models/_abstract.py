"""The interface every zoo model shares."""

import abc
import functools
from typing import TYPE_CHECKING, Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

BATCH_AXIS = "batch"
"""The ``jax.vmap`` axis name over which BatchNorm computes batch statistics."""

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "gelu_exact": functools.partial(jax.nn.gelu, approximate=False),
    "silu": jax.nn.silu,
    "selu": jax.nn.selu,
    "elu": jax.nn.elu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "log_softmax": jax.nn.log_softmax,
    "identity": lambda x: x,
}
"""Activations by name. Names, not functions, keep a model's config JSON."""
ACTIVATION_NAMES: tuple[str, ...] = tuple(ACTIVATIONS)
"""The activation names a model config may give."""


def get_activation(name: str) -> Any:
    """Look up an activation by name, failing with the list of valid names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"Unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}."
        ) from None


DTYPES = {"float32": jnp.float32, "float64": jnp.float64, "bfloat16": jnp.bfloat16}


def parse_dtype(dtype: Any) -> str | None:
    """Normalise a dtype argument to a JSON-friendly name (``None`` = default)."""
    if dtype is None:
        return None
    name = jnp.dtype(dtype).name
    if name not in DTYPES:
        raise ValueError(
            f"Unsupported parameter dtype {name!r}; choose one of {sorted(DTYPES)}."
        )
    return name


class AbstractModel(eqx.Module):
    """A zoo classifier: maps ONE unbatched example to class logits.

    Stateless models are called as ``model(x, key=key) -> logits``. Stateful models
    (those with BatchNorm) are called as ``model(x, state, key=key) -> (logits,
    state)`` inside ``jax.vmap(..., axis_name=zoo.models.BATCH_AXIS)``. Use
    [`zoo.apply`][] to call either kind the same way.
    """

    out_size: eqx.AbstractVar[int]
    stateful: ClassVar[bool]
    """Whether calls take and return an ``eqx.nn.State`` (BatchNorm)."""
    flattens_input: ClassVar[bool] = False
    """Whether an example of another shape with as many values is flattened into
    ``input_shape`` (only models that say so; never guessed)."""

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """The shape of ONE input example, e.g. ``(784,)`` or ``(1, 28, 28)``."""

    if TYPE_CHECKING:

        def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """The JSON-serialisable constructor arguments, with a ``"family"`` key.

        ``zoo.models.build_model(model.config(), key=key)`` builds a model with the same
        structure (and, with the same key, the same parameters).
        """


def stage_indices(indices: Any, count: int, owner: str) -> tuple[int, ...]:
    """``indices`` of ``count`` stages as non-negative ints (``None``: all).

    Negative indices count from the end, as in a Python sequence.

    Raises:
        ValueError: an index outside ``[-count, count)``, or not an int.
    """
    if indices is None:
        return tuple(range(count))
    chosen = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise ValueError(f"{owner} stage indices must be ints, got {i!r}.")
        if not -count <= i < count:
            raise ValueError(
                f"{owner} has {count} stages (0 to {count - 1}, or -{count} to -1 "
                f"from the end): index {i} is out of range."
            )
        chosen.append(int(i) % count)
    return tuple(chosen)


def dropout_active(model_name: str, dropout: eqx.nn.Dropout, key: Any) -> bool:
    """Whether ``dropout`` will drop units; refuses an active dropout without a key.

    Raises:
        ValueError: dropout is active (``p > 0``, not in inference mode) and
            ``key`` is ``None``; the message says how to fix it.
    """
    active = dropout.p > 0 and not dropout.inference
    if active and key is None:
        raise ValueError(
            f"{model_name}(dropout={dropout.p}) is in training mode and needs "
            "`key=`; pass a PRNG key, or call `eqx.nn.inference_mode(model)` for "
            "evaluation."
        )
    return active


class AbstractImageClassifier(AbstractModel):
    """A stateful classifier of ONE channels-first image ending in ``output``.

    Called as ``model(x, state, key=None) -> (logits, state)`` with ``x`` of
    shape ``(in_channels, height, width)`` and logits of shape ``(out_size,)``,
    inside ``jax.vmap(..., axis_name=zoo.models.BATCH_AXIS)`` in training mode (the
    BatchNorm statistics span the batch). ``key`` is needed only while dropout
    is active. A wrong image shape or a missing dropout key raises
    ``ValueError``; BatchNorm in training mode outside that ``vmap`` raises
    ``NameError``.
    """

    in_channels: eqx.AbstractVar[int]
    image_size: eqx.AbstractVar[tuple[int, int]]
    output: eqx.AbstractVar[eqx.nn.Linear | eqx.nn.Identity]
    stateful: ClassVar[bool] = True

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(in_channels, height, width)``."""
        return (self.in_channels, *self.image_size)

    def features(
        self,
        x: Float[Array, "channels height width"],
        state: eqx.nn.State,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, " features"], eqx.nn.State]:
        """The activations the classifier sees for one image, and the state.

        The same computation as ``__call__`` up to the last linear layer
        (``self.output``), which is left out: for transfer learning, or to
        look at what the network learned. Batch it with
        [`zoo.features`][zoo.features].

        Args:
            x: one image, shape ``(in_channels, height, width)``.
            state: the BatchNorm state.
            key: PRNG key for dropout; required only when dropout is active.

        Returns:
            ``(features, state)``, features of shape ``(output.in_features,)``.
        """
        body = eqx.tree_at(lambda m: m.output, self, eqx.nn.Identity())
        return body(x, state, key=key)
