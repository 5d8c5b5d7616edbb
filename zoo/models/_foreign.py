"""Models zoo did not build: any ``eqx.Module`` called on ONE example.

zoo calls such a model in one of two forms, chosen by the ``state`` passed
with it (never guessed from the model):

* ``state=None``: ``model(x, *, key=None) -> logits``;
* ``state`` an ``eqx.nn.State`` (from ``eqx.nn.make_with_state``):
  ``model(x, state, *, key=None) -> (logits, state)``, inside
  ``jax.vmap(..., axis_name=zoo.models.BATCH_AXIS)``, so a BatchNorm built
  with ``axis_name=zoo.models.BATCH_AXIS`` takes its statistics over the batch.

``x`` has the shape of one example of the data (such a model declares no
``input_shape``) and ``logits`` the shape ``(classes,)``. zoo's own models
(:class:`~zoo.models.AbstractModel`) say which form they take with their
``stateful`` attribute. Everything here checks the form up front or while
tracing, so a model that takes or returns something else fails with a message
that names the two forms, before any step runs.
"""

import inspect
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
from jaxtyping import Array, Float

from ._abstract import BATCH_AXIS, AbstractModel

CALL_FORMS = (
    "zoo calls a model on ONE example in one of two forms: "
    "model(x, *, key=None) -> logits, when the state passed is None; or "
    "model(x, state, *, key=None) -> (logits, state), when the state passed is "
    "the eqx.nn.State from eqx.nn.make_with_state (BatchNorm)"
)

ExampleCall = Callable[
    [Array, eqx.nn.State | None, Any], tuple[Float[Array, " classes"], Any]
]
"""``(x, state, key) -> (logits, state)`` for one example, whatever the form."""


def is_zoo_model(model: Any) -> bool:
    """Whether ``model`` is one of zoo's own (it subclasses ``AbstractModel``)."""
    return isinstance(model, AbstractModel)


def takes_state(model: Any, state: Any) -> bool:
    """Whether zoo calls ``model`` as ``model(x, state, ...)``.

    A zoo model says so itself (``stateful``); any other model takes a state
    exactly when an ``eqx.nn.State`` is passed with it.

    Raises:
        TypeError: ``model`` is not an ``eqx.Module``, or ``state`` is neither
            ``None`` nor an ``eqx.nn.State``.
    """
    if is_zoo_model(model):
        return model.stateful
    if not isinstance(model, eqx.Module) or not callable(model):
        raise TypeError(
            f"zoo trains and runs Equinox models (an eqx.Module with __call__), "
            f"got {type(model).__name__}. {CALL_FORMS}."
        )
    if state is None:
        return False
    if isinstance(state, eqx.nn.State):
        return True
    raise TypeError(
        f"The state of a {type(model).__name__} must be None or an eqx.nn.State, "
        f"got {type(state).__name__}. {CALL_FORMS}."
    )


def example_call(model: Any, stateful: bool) -> ExampleCall:
    """``model`` as one function ``(x, state, key) -> (logits, state)``.

    For a model zoo did not build, its ``__call__`` signature and its BatchNorm
    layers' axis names are checked now, and what it returns while traced.

    Raises:
        TypeError: ``__call__`` does not take the form ``stateful`` asks for,
            or (when traced) returns something other than that form's result.
        ValueError: a BatchNorm layer whose ``axis_name`` is not
            ``zoo.models.BATCH_AXIS``, or logits that are not one vector.
    """
    call: Callable[..., Any] = model
    if is_zoo_model(model):
        if stateful:
            return lambda x, s, k: call(x, s) if k is None else call(x, s, key=k)
        return lambda x, s, k: (call(x) if k is None else call(x, key=k), s)
    _check_signature(model, stateful)
    _check_batch_norm_axes(model)

    def stateless(x: Array, state: Any, key: Any) -> tuple[Array, Any]:
        return _checked_output(model, call(x, key=key), False), state

    def with_state(x: Array, state: Any, key: Any) -> tuple[Array, Any]:
        out = call(x, state, key=key)
        return _checked_output(model, out, True), out[1]

    return with_state if stateful else stateless


def _form(stateful: bool) -> str:
    return (
        "model(x, state, *, key=None) -> (logits, state)"
        if stateful
        else "model(x, *, key=None) -> logits"
    )


def _check_signature(model: Any, stateful: bool) -> None:
    """Refuse a ``__call__`` that cannot take the form ``stateful`` asks for."""
    name = type(model).__name__
    try:
        signature = inspect.signature(model)
    except (TypeError, ValueError):  # not inspectable: the call itself will tell
        return
    args = ("x", "state") if stateful else ("x",)
    try:
        signature.bind(*args, key=None)
    except TypeError as error:
        if stateful:
            hint = (
                "A state was passed, so zoo calls it with one; for a model "
                "without state pass state=None."
            )
        else:
            hint = (
                "No state was passed (state=None), so zoo calls it without one; "
                "for a model with state (BatchNorm) build it with "
                "eqx.nn.make_with_state and pass that state."
            )
        raise TypeError(
            f"{name}.__call__{_plain(signature)} cannot be called as "
            f"{_form(stateful)} "
            f"({error}). {hint} {CALL_FORMS}."
        ) from None


def _plain(signature: inspect.Signature) -> inspect.Signature:
    """``signature`` without annotations (jaxtyping's are long to read)."""
    empty = inspect.Parameter.empty
    return signature.replace(
        parameters=[p.replace(annotation=empty) for p in signature.parameters.values()],
        return_annotation=empty,
    )


def _check_batch_norm_axes(model: Any) -> None:
    """Refuse a BatchNorm whose batch statistics would span another axis."""
    layers = jax.tree_util.tree_flatten_with_path(
        model, is_leaf=lambda node: isinstance(node, eqx.nn.BatchNorm)
    )[0]
    for path, layer in layers:
        if not isinstance(layer, eqx.nn.BatchNorm):
            continue
        names = layer.axis_name
        names = tuple(names) if isinstance(names, list | tuple) else (names,)
        if names != (BATCH_AXIS,):
            raise ValueError(
                f"The BatchNorm at {type(model).__name__}"
                f"{jax.tree_util.keystr(path)} has axis_name={layer.axis_name!r}, "
                f"but zoo maps the batch over the axis named {BATCH_AXIS!r}: "
                "build it with eqx.nn.BatchNorm(..., "
                "axis_name=zoo.models.BATCH_AXIS)."
            )


def _checked_output(model: Any, out: Any, stateful: bool) -> Any:
    """The logits of one example's ``out``, checked against the call's form."""
    name = type(model).__name__
    pair = isinstance(out, tuple) and len(out) == 2
    if stateful and not (pair and isinstance(out[1], eqx.nn.State)):
        got = _describe(out)
        raise TypeError(
            f"{name} was called as {_form(True)} (a state was passed) but returned "
            f"{got}. {CALL_FORMS}."
        )
    logits = out[0] if stateful else out
    if not isinstance(logits, jax.Array):
        hint = (
            " It returned a (logits, state) pair: pass its eqx.nn.State as `state`."
            if pair and isinstance(out[1], eqx.nn.State)
            else ""
        )
        raise TypeError(
            f"{name} was called as {_form(stateful)} but returned "
            f"{_describe(logits)} where the logits should be.{hint} {CALL_FORMS}."
        )
    if logits.ndim != 1 or not jax.numpy.issubdtype(logits.dtype, jax.numpy.floating):
        raise ValueError(
            f"{name} returned logits of shape {tuple(logits.shape)} and dtype "
            f"{logits.dtype} for ONE example; they must be one floating-point "
            f"vector, shape (classes,). {CALL_FORMS}."
        )
    return logits


def _describe(value: Any) -> str:
    if isinstance(value, jax.Array):
        return f"an array of shape {tuple(value.shape)}"
    if isinstance(value, tuple):
        inner = ", ".join(_describe(v) for v in value)
        return f"a tuple ({inner})"
    return f"a {type(value).__name__}"


def model_config(model: Any) -> dict[str, Any]:
    """What a checkpoint records of ``model`` to rebuild or recognise it.

    A zoo model's ``config()`` (it rebuilds the model). Any other model has no
    config zoo can build from: its class is recorded instead, as
    ``{"class": qualified name, "module": its module}``, to recognise it.
    """
    if is_zoo_model(model):
        return model.config()
    cls = type(model)
    return {"class": cls.__qualname__, "module": cls.__module__}


def same_model_class(config: dict[str, Any], model: Any) -> bool:
    """Whether a checkpoint's ``config`` (of a model zoo did not build) was
    written for ``model``'s class (by name: the module a class is imported
    from may differ between the script that saved and the one that loads)."""
    return config.get("class") == type(model).__qualname__
