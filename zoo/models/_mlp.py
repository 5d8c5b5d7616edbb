"""Multi-layer perceptron."""

from collections.abc import Sequence
from typing import Any, ClassVar

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import checked_model_call
from ._abstract import (
    DTYPES,
    AbstractModel,
    dropout_active,
    get_activation,
    parse_dtype,
)


class MLP(AbstractModel):
    """A multi-layer perceptron classifier on ONE flat example.

    ``depth`` hidden layers of ``width_size`` units (or one width per layer), each
    followed by ``activation`` and, if ``dropout > 0``, dropout; then a linear
    layer to ``out_size`` logits and ``final_activation``. With ``out_size=0``
    there is no final layer: the model returns its last hidden layer (what
    ``features`` returns).

    Example:
        >>> import jax, zoo
        >>> model = zoo.MLP(784, 10, width_size=512, depth=2, key=jax.random.key(0))
        >>> model(jax.numpy.zeros(784)).shape
        (10,)
        >>> jax.vmap(model)(jax.numpy.zeros((32, 784))).shape
        (32, 10)
    """

    layers: tuple[eqx.nn.Linear, ...]
    dropout: eqx.nn.Dropout
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    width_sizes: tuple[int, ...] = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    final_activation: str = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    use_final_bias: bool = eqx.field(static=True)
    dtype: str | None = eqx.field(static=True)

    stateful: ClassVar[bool] = False
    flattens_input: ClassVar[bool] = True
    """An example of any shape with ``in_size`` values (a 28x28 image) is
    flattened: the MLP declares it, so zoo's input rule allows it."""

    def __init__(
        self,
        in_size: int,
        out_size: int,
        width_size: int | Sequence[int],
        depth: int | None = None,
        *,
        activation: str = "relu",
        final_activation: str = "identity",
        use_bias: bool = True,
        use_final_bias: bool = True,
        dropout: float = 0.0,
        dtype: Any = None,
        key: PRNGKeyArray,
    ):
        """Build the layers.

        Args:
            in_size: length of the input vector.
            out_size: number of output logits (classes); ``0`` for no head
                (then ``final_activation`` is not applied either).
            width_size: hidden width, or a sequence with one width per hidden layer.
            depth: number of hidden layers; required with an int ``width_size``,
                optional (must match) with a sequence.
            activation: name of the hidden activation
                (see ``zoo.models.ACTIVATION_NAMES``).
            final_activation: name of the activation applied to the logits.
            use_bias: whether hidden layers have a bias.
            use_final_bias: whether the output layer has a bias.
            dropout: dropout rate after each hidden activation, in ``[0, 1)``.
            dtype: parameter dtype (``None``: JAX's default float).
            key: PRNG key for the initial parameters.

        Raises:
            ValueError: for non-positive sizes, a bad depth, an unknown activation,
                a dropout rate outside ``[0, 1)``, or ``out_size=0`` without a
                hidden layer.
        """
        if isinstance(width_size, int):
            if depth is None:
                raise ValueError("MLP needs `depth` when `width_size` is an int.")
            widths = (width_size,) * depth
        else:
            widths = tuple(int(w) for w in width_size)
            if depth is not None and depth != len(widths):
                raise ValueError(
                    f"MLP got depth={depth} but {len(widths)} widths {widths}."
                )
        if in_size < 1:
            raise ValueError(f"MLP `in_size` must be >= 1, got {in_size}.")
        if out_size < 0:
            raise ValueError(
                f"MLP `out_size` must be >= 0 (0: no head), got {out_size}."
            )
        if out_size == 0 and not widths:
            raise ValueError(
                "MLP(out_size=0) returns its last hidden layer, but it has none: "
                "give at least one hidden width."
            )
        if any(w < 1 for w in widths):
            raise ValueError(f"MLP widths must be >= 1, got {widths}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLP `dropout` must be in [0, 1), got {dropout}.")
        for act in (activation, final_activation):
            _ = get_activation(act)
        self.dtype = parse_dtype(dtype)
        param_dtype = None if self.dtype is None else DTYPES[self.dtype]

        sizes = (in_size, *widths, out_size)
        keys = jax.random.split(key, len(sizes) - 1)
        # out_size=0: no final layer (the same keys draw the same hidden layers).
        self.layers = tuple(
            eqx.nn.Linear(
                sizes[i],
                sizes[i + 1],
                use_bias=use_bias if i < len(widths) else use_final_bias,
                dtype=param_dtype,
                key=keys[i],
            )
            for i in range(len(sizes) - 1)
            if sizes[i + 1]
        )
        self.dropout = eqx.nn.Dropout(dropout)
        self.in_size = in_size
        self.out_size = out_size
        self.width_sizes = widths
        self.activation = activation
        self.final_activation = final_activation
        self.use_bias = use_bias
        self.use_final_bias = use_final_bias

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(in_size,)``."""
        return (self.in_size,)

    @checked_model_call
    def __call__(
        self, x: Float[Array, " in_size"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " out_size"]:
        """Logits for one example.

        Args:
            x: one flat example, shape ``(in_size,)``.
            key: PRNG key for dropout; required only when dropout is active
                (``dropout > 0`` and not in inference mode).

        Returns:
            Logits of shape ``(out_size,)``; with ``out_size=0``, the features
            of shape ``(width_sizes[-1],)``.
        """
        hidden = self.features(x, key=key)
        if not self.out_size:
            return hidden
        return get_activation(self.final_activation)(self.layers[-1](hidden))

    def features(
        self, x: Float[Array, " in_size"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " features"]:
        """The activations the classifier sees for one example.

        The same computation as ``__call__`` up to the last linear layer
        (``self.layers[-1]``), which is left out with ``final_activation``:
        for transfer learning, or to look at what the network learned. Batch
        it with [`zoo.features`][zoo.features].

        Args:
            x: one flat example, shape ``(in_size,)``.
            key: PRNG key for dropout; required only when dropout is active.

        Returns:
            The last hidden layer's activations, shape ``(width_sizes[-1],)``
            (the input itself for an MLP without hidden layers).
        """
        stochastic = dropout_active("MLP", self.dropout, key)
        keys = (
            jax.random.split(key, len(self.layers))
            if stochastic and key is not None
            else [None] * len(self.layers)
        )
        act = get_activation(self.activation)
        hidden = self.layers[: len(self.width_sizes)]
        for layer, k in zip(hidden, keys, strict=False):
            x = self.dropout(act(layer(x)), key=k)
        return x

    def config(self) -> dict[str, Any]:
        """The JSON constructor arguments, with ``"family": "MLP"``."""
        return {
            "family": "MLP",
            "in_size": self.in_size,
            "out_size": self.out_size,
            "width_size": list(self.width_sizes),
            "activation": self.activation,
            "final_activation": self.final_activation,
            "use_bias": self.use_bias,
            "use_final_bias": self.use_final_bias,
            "dropout": self.dropout.p,
            "dtype": self.dtype,
        }
