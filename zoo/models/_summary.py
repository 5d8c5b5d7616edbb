"""``summary``: a model's layers, output shapes, parameters, FLOPs and memory.

Everything is computed abstractly: the shapes with ``eqx.filter_eval_shape``
and the FLOPs from XLA's cost analysis of the lowered forward pass, so nothing
runs on the device and no parameters are copied.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._abstract import get_activation
from ._cnn import CNN
from ._mlp import MLP
from ._registry import build_model
from ._resnet import ResNet
from ._resnet_blocks import max_pool_3x3_s2
from ._vit import ViT

Stage = tuple[str, Any, Callable[[Any, Any], tuple[Any, Any]]]
"""A row of the summary: its name (key path), the module holding its
parameters (``None``: none) and what it does to ``(x, state)``."""


@dataclasses.dataclass(frozen=True)
class LayerSummary:
    """One row of a [`ModelSummary`][zoo.models.ModelSummary].

    Attributes:
        name: the layer's key path in the model, e.g. ``"blocks[0]"``.
        output_shape: the shape of its output for one example (``None``: not
            known for this model's family).
        parameters: its trainable floating-point parameters.
    """

    name: str
    output_shape: tuple[int, ...] | None
    parameters: int


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """What [`zoo.summary`][] reports; ``str()`` gives it as a table.

    Attributes:
        model: the model's class name.
        input_shape: the shape of one input example.
        layers: one row per layer (top-level block) in the order they run.
        parameters: trainable parameters: the model's floating-point arrays,
            state excluded (the count on the model cards and in the README).
        parameter_bytes: the memory those parameters take.
        state: values in the ``eqx.nn.State`` (BatchNorm running statistics
            and counters), not trained.
        state_bytes: the memory the state takes.
        flops: floating-point operations of one forward pass on one example
            (inference mode), from XLA's cost analysis; ``None`` where XLA
            gives no figure.
    """

    model: str
    input_shape: tuple[int, ...]
    layers: tuple[LayerSummary, ...]
    parameters: int
    parameter_bytes: int
    state: int
    state_bytes: int
    flops: float | None

    def __str__(self) -> str:
        rows = [
            (
                layer.name,
                "-" if layer.output_shape is None else str(layer.output_shape),
                f"{layer.parameters:,}",
            )
            for layer in self.layers
        ]
        head = ("layer", "output shape", "parameters")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]

        def line(row: Sequence[str]) -> str:
            return (
                f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}"
            )

        rule = "-" * len(line(head))
        flops = "unknown" if self.flops is None else _si(self.flops)
        return "\n".join(
            [
                f"{self.model} on input {self.input_shape}",
                rule,
                line(head),
                rule,
                *(line(r) for r in rows),
                rule,
                f"parameters: {self.parameters:,} ({_bytes(self.parameter_bytes)})",
                f"state (not trained): {self.state:,} ({_bytes(self.state_bytes)})",
                f"FLOPs per example: {flops}",
            ]
        )


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def _bytes(value: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value} B"


def _count(tree: Any) -> tuple[int, int]:
    """Floating-point parameters in ``tree`` and their bytes."""
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    return (
        sum(int(leaf.size) for leaf in leaves),
        sum(int(leaf.size) * leaf.dtype.itemsize for leaf in leaves),
    )


def _norm(layer: eqx.nn.BatchNorm, x: Any, state: Any) -> tuple[Any, Any]:
    # As in the models: BatchNorm(mode="batch") adds a Python float to an int32
    # counter, which strict dtype promotion refuses.
    with jax.numpy_dtype_promotion("standard"):
        return layer(x, state)


def _stages(model: Any) -> list[Stage] | None:
    """The rows of zoo's own families, each with what it computes."""
    if isinstance(model, MLP):
        hidden = get_activation(model.activation)
        final = get_activation(model.final_activation)
        last = len(model.layers) - 1
        return [
            (
                f"layers[{i}]",
                layer,
                lambda x, s, layer=layer, act=final if i == last else hidden: (
                    act(layer(jnp.ravel(x))),
                    s,
                ),
            )
            for i, layer in enumerate(model.layers)
        ]
    if isinstance(model, CNN):
        act = get_activation(model.activation)
        stages: list[Stage] = [
            (f"blocks[{i}]", block, lambda x, s, block=block: block(x, s))
            for i, block in enumerate(model.blocks)
        ]
        stages += [
            (
                f"hidden[{i}]",
                layer,
                lambda x, s, layer=layer: (act(layer(jnp.ravel(x))), s),
            )
            for i, layer in enumerate(model.hidden)
        ]
        return [
            *stages,
            ("output", model.output, lambda x, s: (model.output(jnp.ravel(x)), s)),
        ]
    if isinstance(model, ResNet):
        act = get_activation(model.activation)
        stages = [
            ("stem", model.stem, lambda x, s: (model.stem(x), s)),
            (
                "stem_norm",
                model.stem_norm,
                lambda x, s: _act(act, *_norm(model.stem_norm, x, s)),
            ),
        ]
        if model.stem_kind == "imagenet":
            stages.append(
                ("stem max pool", None, lambda x, s: (max_pool_3x3_s2(x, "xla"), s))
            )
        stages += [
            (f"blocks[{i}]", block, lambda x, s, block=block: block(x, s))
            for i, block in enumerate(model.blocks)
        ]
        return [
            *stages,
            ("global average pool", None, lambda x, s: (jnp.mean(x, axis=(1, 2)), s)),
            ("output", model.output, lambda x, s: (model.output(x), s)),
        ]
    if isinstance(model, ViT):
        embedding = (model.patch_embed, model.cls_token, model.pos_embed)
        stages = [("embedding", embedding, lambda x, s: (model.embed(x), s))]
        stages += [
            (f"blocks[{i}]", block, lambda x, s, block=block: (block(x), s))
            for i, block in enumerate(model.blocks)
        ]
        return [
            *stages,
            (
                "norm (class token)" if model.pool == "token" else "norm (mean token)",
                model.norm,
                lambda x, s: (model.pool_tokens(x), s),
            ),
            ("output", model.output, lambda x, s: (model.output(x), s)),
        ]
    return None


def _act(act: Callable[[Any], Any], x: Any, state: Any) -> tuple[Any, Any]:
    return act(x), state


def _children(model: Any) -> list[tuple[str, Any]]:
    """A model of another kind: its top-level fields (and their items) that hold
    parameters, in field order."""
    found: list[tuple[str, Any]] = []
    for field in dataclasses.fields(model):
        value = getattr(model, field.name, None)
        if isinstance(value, list | tuple):
            found += [(f"{field.name}[{i}]", v) for i, v in enumerate(value)]
        else:
            found.append((field.name, value))
    return [(name, value) for name, value in found if _count(value)[0]]


def _abstract(tree: Any) -> Any:
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype) if eqx.is_array(a) else a,
        tree,
    )


def _flops(
    model: Any, state: Any, x: jax.ShapeDtypeStruct, stateful: bool
) -> float | None:
    """FLOPs of one forward pass, from XLA's cost analysis (nothing is run)."""
    dynamic, static = eqx.partition(model, eqx.is_array)

    def forward(dynamic: Any, state: Any, x: Any) -> Any:
        call = eqx.combine(dynamic, static)
        return call(x, state)[0] if stateful else call(x)

    cost = jax.jit(forward).trace(_abstract(dynamic), state, x).lower().cost_analysis()
    if isinstance(cost, list | tuple):  # older JAX: one dict per computation
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def summary(
    model: Any,
    state: eqx.nn.State | None = None,
    *,
    input_shape: Sequence[int] | None = None,
    dtype: Any = None,
) -> ModelSummary:
    """A summary of ``model``: layers, output shapes, parameters, FLOPs, memory.

    The rows are the model's top-level blocks (for an [`MLP`][zoo.MLP], a
    [`CNN`][zoo.CNN], a [`ResNet`][zoo.ResNet] or a [`ViT`][zoo.ViT]) with
    each one's output shape for one example; for another ``eqx.Module``,
    its top-level fields that hold parameters, without output shapes. Nothing
    runs on the device: shapes come from ``eqx.filter_eval_shape`` and FLOPs
    from XLA's cost analysis of the lowered forward pass (inference mode, one
    example).

    Example:
        >>> import jax, zoo
        >>> model, state = zoo.create_model("mlp", key=jax.random.key(0))
        >>> s = zoo.summary(model, state)
        >>> s.parameters, s.layers[0].output_shape
        (669706, (512,))
        >>> print(s)  # doctest: +ELLIPSIS
        MLP on input (784,)
        ...

    Args:
        model: a zoo model, or any ``eqx.Module`` called on ONE example as
            ``model(x)`` or (with ``state``) ``model(x, state)``.
        state: the model's state; for zoo's stateful models it may be left
            out (an abstract one is built from ``model.config()``).
        input_shape: the shape of one example; default ``model.input_shape``
            (needed for models without one).
        dtype: the input's dtype; default the parameters' floating dtype
            (float32 for a model without parameters).

    Returns:
        A [`ModelSummary`][zoo.models.ModelSummary]; ``print`` it for a table.

    Raises:
        ValueError: no ``input_shape`` for a model without one, or no
            ``state`` for a stateful model zoo cannot build one for.
    """
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
        if input_shape is None:
            raise ValueError(
                f"zoo.summary does not know the input shape of a "
                f"{type(model).__name__}: pass input_shape=(...), the shape of "
                "ONE example."
            )
    shape = tuple(int(n) for n in input_shape)
    stateful = bool(getattr(model, "stateful", state is not None))
    if stateful and (state is None or not jax.tree.leaves(state)):
        config = getattr(model, "config", None)
        if config is None:
            raise ValueError(
                f"{type(model).__name__} is stateful: pass its `state` to "
                "zoo.summary(model, state)."
            )
        state = eqx.filter_eval_shape(
            lambda: build_model(config(), key=jax.random.key(0))[1]
        )
    params, param_bytes = _count(model)
    if dtype is None:
        floats = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
        dtype = floats[0].dtype if floats else jnp.float32
    x = jax.ShapeDtypeStruct(shape, jnp.dtype(dtype))
    state_leaves = [leaf for leaf in jax.tree.leaves(state) if hasattr(leaf, "shape")]
    abstract_state = _abstract(state) if stateful else None

    inference = eqx.nn.inference_mode(model)
    stages = _stages(inference)
    layers: list[LayerSummary] = []
    if stages is None:
        layers = [
            LayerSummary(name, None, _count(value)[0])
            for name, value in _children(model)
        ]
    else:

        def shapes(x: Any, state: Any) -> list[tuple[int, ...]]:
            out = []
            for _, _, fn in stages:
                x, state = fn(x, state)
                out.append(tuple(x.shape))
            return out

        # Only shapes come back: eval_shape traces, it does not run.
        traced: list[tuple[int, ...]] = []

        def record(x: Any, state: Any) -> Any:
            traced.extend(shapes(x, state))
            return None

        eqx.filter_eval_shape(record, x, abstract_state)
        layers = [
            LayerSummary(name, out, _count(module)[0] if module is not None else 0)
            for (name, module, _), out in zip(stages, traced, strict=True)
        ]
    listed = sum(layer.parameters for layer in layers)
    if listed != params:  # parameters outside the rows: say so, never hide them
        layers.append(LayerSummary("(other)", None, params - listed))
    return ModelSummary(
        model=type(model).__name__,
        input_shape=shape,
        layers=tuple(layers),
        parameters=params,
        parameter_bytes=param_bytes,
        state=sum(int(leaf.size) for leaf in state_leaves),
        state_bytes=sum(
            int(leaf.size) * jnp.dtype(leaf.dtype).itemsize for leaf in state_leaves
        ),
        flops=_flops(inference, abstract_state, x, stateful),
    )
