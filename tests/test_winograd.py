"""Winograd F(2x2, 3x3): the same convolution as XLA's, under every transformation.

``winograd_conv`` is a JAX primitive with its own batching, JVP and transpose
rules, so each rule is checked against ``lax.conv_general_dilated``: values,
gradients in both arguments, per-example gradients (``vmap`` of ``grad``),
forward mode and second order, and ``vmap`` over the weight (an ensemble).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax import lax

from tests.helpers import assert_close
from zoo.models._winograd import (
    winograd_conv,
    winograd_conv_batch,
    winograd_weight_grad,
)

pads_st = st.tuples(
    st.tuples(st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.integers(0, 2), st.integers(0, 2)),
)


def reference(x, w, pads):
    return lax.conv_general_dilated(
        x, w, (1, 1), list(pads), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _inputs(seed, n, height, width, channels, out):
    kx, kw, kc = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, (n, height, width, channels))
    w = jax.random.normal(kw, (3, 3, channels, out)) / np.sqrt(9 * channels)
    return x, w, kc


@settings(max_examples=15)
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    channels=st.sampled_from([1, 3, 8]),
    out=st.sampled_from([1, 5]),
    pads=pads_st,
    seed=st.integers(0, 2**31 - 1),
)
def test_values_and_gradients_equal_lax_conv(height, width, channels, out, pads, seed):
    (top, bottom), (left, right) = pads
    if height + top + bottom < 3 or width + left + right < 3:
        x = jnp.zeros((1, height, width, channels))
        w = jnp.zeros((3, 3, channels, out))
        with pytest.raises(ValueError, match="no output pixels"):
            winograd_conv(x, w, pads)
        with pytest.raises(ValueError, match="no output pixels"):
            jax.jit(winograd_conv, static_argnums=2)(x, w, pads)
        return
    x, w, kc = _inputs(seed, 2, height, width, channels, out)
    ct = jax.random.normal(kc, reference(x, w, pads).shape)
    actual, expected = _values_and_grads(x, w, ct, pads)
    for a, b in zip(actual, expected, strict=True):
        assert_close(a, b)


@partial(jax.jit, static_argnums=3)
def _values_and_grads(x, w, ct, pads):
    """``(y, dx, dw)`` of winograd_conv (with winograd_weight_grad) and of lax."""

    def both(conv):
        y, vjp = jax.vjp(lambda x, w: conv(x, w, pads), x, w)
        return (y, *vjp(ct))

    ours = both(winograd_conv)
    return (
        *ours,
        winograd_conv_batch(x, w, pads),
        winograd_weight_grad(x, ct, pads),
    ), (
        *both(reference),
        ours[0],
        ours[2],
    )


def _one(conv, pads):
    """The convolution of ONE map, as a model's layer calls it."""
    return lambda x, w: conv(x[None], w, pads)[0]


@pytest.mark.parametrize("pads", [((1, 1), (1, 1)), ((0, 2), (2, 0))])
def test_every_order_of_transformations_equals_lax_conv(pads):
    x, w, _ = _inputs(0, 3, 6, 5, 4, 6)
    ws = jnp.stack([w, -0.5 * w])

    def loss(conv):
        return lambda w, x: jnp.sum(jnp.sin(_one(conv, pads)(x, w)))

    cases = {
        # How a model trains: grad of a loss over a vmapped batch.
        "grad(vmap)": lambda c: jax.grad(
            lambda w, x: jnp.sum(jnp.sin(jax.vmap(_one(c, pads), (0, None))(x, w))),
            (0, 1),
        )(w, x),
        # Per-example gradients.
        "vmap(grad)": lambda c: jax.vmap(jax.grad(loss(c)), (None, 0))(w, x),
        "vmap(vmap)": lambda c: jax.vmap(jax.vmap(_one(c, pads), (0, None)), (0, None))(
            jnp.stack([x, 2 * x]), w
        ),
        # An ensemble: one weight per mapped element, with or without x mapped.
        "vmap over w": lambda c: jax.vmap(_one(c, pads), (None, 0))(x[0], ws),
        "vmap over x, w": lambda c: jax.vmap(_one(c, pads), (0, 0))(x[:2], ws),
        "jvp": lambda c: jax.jvp(
            lambda x, w: c(x, w, pads), (x, w), (0.5 * x, 2.0 * w)
        ),
        "hessian-vector": lambda c: jax.jvp(
            jax.grad(lambda w: jnp.sum(jnp.sin(c(x, w, pads)))), (w,), (w,)
        ),
        "jit(grad(vmap))": lambda c: jax.jit(jax.grad(loss(c)))(w, x[0]),
    }
    for name, case in cases.items():
        actual = jax.jit(lambda case=case: case(winograd_conv))()
        expected = jax.jit(lambda case=case: case(reference))()
        for a, b in zip(
            jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True
        ):
            assert a.shape == b.shape, name
            assert_close(a, b, rtol=5e-4)


def test_a_vmapped_layer_computes_the_whole_batch_in_one_call():
    # The batching rule folds the mapped axis into the batch: one primitive on
    # (batch, ...) maps, not a loop and not 16 products per example.
    x = jnp.zeros((8, 7, 7, 4))
    w = jnp.zeros((3, 3, 4, 6))
    jaxpr = jax.make_jaxpr(jax.vmap(_one(winograd_conv, ((1, 1), (1, 1))), (0, None)))(
        x, w
    )
    calls = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "winograd_conv"]
    assert len(calls) == 1
    assert calls[0].invars[0].aval.shape == (8, 7, 7, 4)


def test_paddings_outside_zero_to_two_and_empty_outputs_are_refused():
    x, w = jnp.zeros((1, 6, 6, 2)), jnp.zeros((3, 3, 2, 2))
    with pytest.raises(ValueError, match="paddings from 0 to 2"):
        winograd_conv(x, w, ((3, 3), (1, 1)))
    with pytest.raises(ValueError, match="paddings from 0 to 2"):
        winograd_conv(x, w, ((1, 1), (-1, 0)))
    with pytest.raises(ValueError, match="no output pixels"):
        jax.jit(winograd_conv, static_argnums=2)(x[:, :1], w, ((0, 1), (1, 1)))
