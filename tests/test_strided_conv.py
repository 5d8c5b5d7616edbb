"""Strided convolutions with the input gradient by phases equal XLA's.

``strided_conv`` must be ``lax.conv_general_dilated`` in value, input gradient
and weight gradient, for every kernel size, stride, padding and channel count a
model can ask for, batched as the models call it (one map per example under
``jax.vmap``) and differentiated twice; and the CNNs' gradients must really
take the phases (no input-dilated convolution left) on the channels-last path.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from hypothesis import assume, example, given, strategies as st
from jax import lax
from jax.extend.core import subjaxprs

import zoo
from tests.helpers import assert_close, make_model, random_inputs
from zoo.models._strided_conv import by_phases, strided_conv

seeds = st.integers(min_value=0, max_value=2**31 - 1)
LAYOUT = ("NHWC", "HWIO", "NHWC")


def _reference(x, w, stride, pads):
    return lax.conv_general_dilated(x, w, stride, pads, dimension_numbers=LAYOUT)


@st.composite
def layers(draw):
    """A strided convolution a model could hold: sizes, strides and paddings
    drawn per axis (odd and even maps, asymmetric padding, kernels wider than
    the stride and narrower)."""
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    assume(max(stride) > 1)
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    padding = draw(st.sampled_from(["SAME", "VALID", "explicit"]))
    if padding == "explicit":
        pads = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in "hw")
    else:
        pads = tuple(lax.padtype_to_pads(size, kernel, stride, padding))
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    assume(all(s + sum(p) >= k for s, p, k in zip(size, pads, kernel, strict=True)))
    channels = (draw(st.sampled_from([1, 3, 8])), draw(st.sampled_from([1, 5, 16])))
    return kernel, stride, size, pads, channels


@given(layer=layers(), seed=seeds)
# A low padding wider than the window: its transpose once read out of bounds.
@example(layer=((2, 1), (1, 2), (1, 1), ((2, 0), (0, 0)), (1, 5)), seed=0)
def test_strided_conv_equals_lax_conv_in_value_and_both_gradients(layer, seed):
    (kh, kw), stride, (height, width), pads, (cin, cout) = layer
    keys = jax.random.split(jax.random.key(seed), 3)
    xs = jax.random.normal(keys[0], (3, height, width, cin))
    w = jax.random.normal(keys[1], (kh, kw, cin, cout))

    def batched(conv):  # one map per example, as the models call it
        return jax.vmap(lambda x, w: conv(x[None], w, stride, pads)[0], (0, None))

    expected = batched(_reference)(xs, w)
    actual = batched(strided_conv)(xs, w)
    assert actual.shape == expected.shape
    assert_close(actual, expected)
    assert_close(by_phases(xs, w, stride, pads), _reference(xs, w, stride, pads))
    cotangent = jax.random.normal(keys[2], expected.shape)
    grads = [
        jax.grad(
            lambda x, w, f=f: jnp.vdot(jnp.tanh(batched(f)(x, w)), cotangent), (0, 1)
        )(xs, w)
        for f in (strided_conv, _reference)
    ]
    assert_close(grads[0][0], grads[1][0])  # input: by phases
    assert_close(grads[0][1], grads[1][1])  # weight: XLA's own


@given(seed=seeds)
def test_second_derivatives_match(seed):
    # A gradient penalty differentiates the input gradient again.
    keys = jax.random.split(jax.random.key(seed), 2)
    x = jax.random.normal(keys[0], (2, 9, 8, 3))
    w = jax.random.normal(keys[1], (3, 3, 3, 4))
    pads = ((1, 1), (0, 1))

    def penalty(conv, w):
        grad_x = jax.grad(lambda x: jnp.sum(jnp.sin(conv(x, w, (2, 2), pads))))(x)
        return jnp.sum(grad_x**2)

    assert_close(
        jax.grad(penalty, 1)(strided_conv, w), jax.grad(penalty, 1)(_reference, w)
    )


def _convolutions_of_grad(name):
    """The input dilation of each convolution in a gradient of ``name``."""
    model, state = make_model(name, 0)
    xs = random_inputs(model, 2, 1)

    def loss(model):
        logits, _ = zoo.apply(model, xs, state, key=jax.random.key(2))
        return jnp.sum(logits)

    model = zoo.models.with_conv_path(model, "nhwc")
    jaxpr = eqx.filter_make_jaxpr(eqx.filter_grad(loss))(model)[0]
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive is lax.conv_general_dilated_p:
                found.append(tuple(eqn.params["lhs_dilation"]))
        for sub in subjaxprs(jaxpr):
            walk(sub)

    walk(jaxpr.jaxpr)
    return found


@pytest.mark.parametrize("name", ["stax_cnn", "resnet8"])
def test_strided_models_take_their_input_gradients_by_phases(name):
    phases = _convolutions_of_grad(name)
    # No input-dilated (zero-stuffed) convolution: XLA's dilated input
    # gradient would have lhs_dilation equal to the stride.
    assert phases and all(d == (1, 1) for d in phases)
