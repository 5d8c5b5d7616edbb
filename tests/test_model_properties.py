"""Contracts every registered model must satisfy, checked with Hypothesis.

Each test is parametrised over ``zoo.list_models()``, so a preset registered later
is covered without touching this file.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import zoo
from tests.helpers import (
    assert_vmap_matches_loop,
    make_model,
    params,
    random_inputs,
    weights,
)

IMAGENET_RESNETS = ("resnet18", "resnet34", "resnet50")
"""Too large for these draws on a 2-core CPU (11-26M parameters: minutes a test
even at 32x32). Their family, with the ImageNet stem and both kinds of block,
has the same properties tested at a small width in tests/test_resnet_imagenet.py,
and each preset one 224x224 forward there."""
IMAGENET_VITS = ("vit_tiny_patch16_224", "vit_small_patch16_224")
"""Also minutes a test at 224x224. Their family (zoo.ViT: patch embedding,
class token, learned positions, pre-norm blocks) is tested here at 28x28 as
``vit_patch4_28``, the same code at another size; each preset has one 224x224
forward in tests/test_vit.py."""
MODELS = [
    pytest.param(name, marks=pytest.mark.skip(reason=f"tested small: see {group}"))
    if group
    else name
    for name in zoo.list_models()
    for group in [
        "IMAGENET_RESNETS"
        if name in IMAGENET_RESNETS
        else "IMAGENET_VITS"
        if name in IMAGENET_VITS
        else ""
    ]
]
seeds = st.integers(min_value=0, max_value=2**31 - 1)
batches = st.integers(min_value=1, max_value=4)


def loss(model, state, xs, labels, key):
    """Mean cross-entropy in training mode; used for gradient tests."""
    logits, _ = zoo.apply(model, xs, state, key=key)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


# Module-level wrappers, so compilations are cached across Hypothesis draws.
jit_apply = eqx.filter_jit(zoo.apply)
jit_loss = eqx.filter_jit(loss)
jit_grad = eqx.filter_jit(eqx.filter_grad(loss))


@pytest.mark.parametrize("name", MODELS)
@given(seed=seeds, batch=batches)
def test_vmap_equals_loop(name, seed, batch):
    model, state = make_model(name, seed)
    model = eqx.nn.inference_mode(model)
    assert_vmap_matches_loop(model, state, random_inputs(model, batch, seed + 1))


class _MixesExamples(zoo.AbstractModel):
    """A broken model: adds the batch mean of its input, mixing examples (only a
    stateful model is mapped over the named batch axis, so it claims state)."""

    inner: zoo.AbstractModel
    out_size: int
    stateful = True

    @property
    def input_shape(self):
        return self.inner.input_shape

    def config(self):
        return self.inner.config()

    def __call__(self, x, state, *, key=None):
        leak = jax.lax.pmean(x, zoo.models.BATCH_AXIS) if _in_batch_axis() else x
        return self.inner(x + leak), state  # pyright: ignore[reportCallIssue]


def _in_batch_axis() -> bool:
    try:
        jax.lax.axis_index(zoo.models.BATCH_AXIS)
    except NameError:
        return False
    return True


def test_vmap_contract_catches_a_model_that_mixes_examples():
    # The helper every model's vmap property uses must fail for this model.
    model, state = make_model("mlp", 0)
    broken = _MixesExamples(inner=model, out_size=model.out_size)
    xs = random_inputs(model, 4, 1)
    assert_vmap_matches_loop(model, state, xs)  # the honest model passes
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_vmap_matches_loop(broken, state, xs)  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("name", MODELS)
@settings(max_examples=3)  # eager convolutions are slow; each draw costs seconds
@given(seed=seeds, batch=batches)
def test_jit_equals_eager(name, seed, batch):
    model, state = make_model(name, seed)
    xs = random_inputs(model, batch + 1, seed + 1)  # BatchNorm needs 2+ examples
    key = jax.random.key(seed + 2)
    eager, eager_state = zoo.apply(model, xs, state, key=key)
    jitted, jit_state = jit_apply(model, xs, state, key=key)
    np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-5)
    assert jax.tree.structure(eager_state) == jax.tree.structure(jit_state)
    for a, b in zip(
        jax.tree.leaves(eager_state), jax.tree.leaves(jit_state), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
@settings(max_examples=4)
@given(seed=seeds)
def test_gradient_matches_finite_differences(name, seed):
    _check_gradient(name, seed)


@pytest.mark.parametrize("option", [{"pool": "avg"}, {"stem": "conv"}], ids=str)
@settings(max_examples=4)
@given(seed=seeds)
def test_vit_options_gradients_match_finite_differences(option, seed):
    """The ViT options no preset uses: mean pooling and the conv stem."""
    _check_gradient("vit_patch4_28", seed, **option)


def _check_gradient(name: str, seed: int, **overrides) -> None:
    # Directional derivative along a random direction in parameter space, in
    # float64: grad(L) . v == (L(p + eps v) - L(p - eps v)) / (2 eps). ReLU's kink
    # makes finite differences meaningless wherever a unit sits within eps of
    # zero, so the layers' maths is checked with a smooth activation; max
    # pooling has the same kink wherever two pooled values sit within eps of
    # each other (cnn, seed 569950), so CNNs pool by averaging here.
    smooth = (
        {"pooling": "avg"}
        if zoo.models.model_spec(name).config["family"] == "CNN"
        else {}
    )
    with jax.enable_x64(True):
        model, state = make_model(
            name, seed, dtype="float64", activation="softplus", **smooth, **overrides
        )
        xs = random_inputs(model, 3, seed + 1, dtype=jnp.float64)
        labels = jax.random.randint(jax.random.key(seed + 2), (3,), 0, 2)
        key = jax.random.key(seed + 3)
        grads = jit_grad(model, state, xs, labels, key)
        leaves, treedef = jax.tree.flatten(eqx.filter(model, eqx.is_inexact_array))
        dkeys = jax.random.split(jax.random.key(seed + 4), len(leaves))
        direction = [
            jax.random.normal(k, p.shape, p.dtype)
            for k, p in zip(dkeys, leaves, strict=True)
        ]
        # A unit-norm step keeps every activation's move of the order of eps.
        norm = jnp.sqrt(sum(jnp.vdot(d, d) for d in direction))
        direction = [d / norm for d in direction]
        v = jax.tree.unflatten(treedef, direction)
        analytic = sum(
            jnp.vdot(g, d) for g, d in zip(params(grads), direction, strict=True)
        )
        # Central differences in float64 err by about eps**2 (truncation) plus
        # 1e-16 * |L| / eps (rounding of the two losses): eps = 1e-5 keeps both
        # near 1e-10 of a loss of order 1. At 1e-6 the rounding alone reaches
        # the tolerance, and which way it falls depends on how the convolutions
        # round (it did, for resnet8 on Winograd, at 1.6e-6 relative).
        eps = 1e-5

        def shifted(sign):
            moved = eqx.apply_updates(model, jax.tree.map(lambda d: sign * eps * d, v))
            return jit_loss(moved, state, xs, labels, key)

        numeric = (shifted(1.0) - shifted(-1.0)) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("name", MODELS)
@given(seed=seeds)
def test_every_parameter_gets_a_gradient(name, seed):
    model, state = make_model(name, seed)
    xs = random_inputs(model, 8, seed + 1)
    labels = jnp.arange(8) % model.out_size
    grads = jit_grad(model, state, xs, labels, jax.random.key(seed))
    flat, _ = jax.tree_util.tree_flatten_with_path(eqx.filter(grads, eqx.is_array))
    for path, g in flat:
        assert bool(jnp.all(jnp.isfinite(g))), jax.tree_util.keystr(path)
        assert bool(jnp.any(g != 0)), f"zero gradient at {jax.tree_util.keystr(path)}"


@pytest.mark.parametrize("name", MODELS)
@given(seed=seeds)
def test_same_key_same_model_different_key_different_model(name, seed):
    a, _ = make_model(name, seed)
    b, _ = make_model(name, seed)
    c, _ = make_model(name, seed + 1)
    assert bool(eqx.tree_equal(a, b))
    for wa, wc in zip(weights(a), weights(c), strict=True):
        assert not np.array_equal(wa, wc)


@pytest.mark.parametrize("name", MODELS)
@given(seed=seeds, batch=batches, scale=st.sampled_from([1.0, 255.0, 1e4]))
def test_outputs_are_finite(name, seed, batch, scale):
    model, state = make_model(name, seed)
    xs = random_inputs(model, batch + 1, seed + 1) * scale
    logits, new_state = jit_apply(model, xs, state, key=jax.random.key(seed))
    assert logits.shape == (batch + 1, model.out_size)
    assert bool(jnp.all(jnp.isfinite(logits)))
    for leaf in jax.tree.leaves(new_state):
        assert bool(jnp.all(jnp.isfinite(leaf)))


@pytest.mark.parametrize("name", MODELS)
@given(seed=seeds)
def test_serialise_round_trip(name, seed, tmp_path_factory):
    model, state = make_model(name, seed)
    xs = random_inputs(model, 4, seed + 1)
    _, state = jit_apply(model, xs, state, key=jax.random.key(seed))  # move stats
    path = tmp_path_factory.mktemp("ckpt") / "model.eqx"
    eqx.tree_serialise_leaves(path, (model, state))
    like = make_model(name, seed + 7)
    loaded_model, loaded_state = eqx.tree_deserialise_leaves(path, like)
    assert bool(eqx.tree_equal((model, state), (loaded_model, loaded_state)))
    inference = eqx.nn.inference_mode(model)
    expected, _ = jit_apply(inference, xs, state)
    actual, _ = jit_apply(eqx.nn.inference_mode(loaded_model), xs, loaded_state)
    # The same program on the same arrays (checked bitwise above); XLA:CPU's
    # default convolution kernels (YNNPACK) may split a small batch's sums over
    # threads differently from one call to the next on a loaded machine, so the
    # outputs agree to float32 rounding (once 1.7e-7 apart, under the test
    # suite's own load with two host devices).
    np.testing.assert_allclose(expected, actual, rtol=1e-6, atol=1e-7)


def _wrong_shapes(shape):
    good = tuple(shape)
    ranks = st.lists(st.integers(1, 40), min_size=0, max_size=4).map(tuple)
    return ranks.filter(lambda s: s != good) | st.just((2, *good))


@pytest.mark.parametrize("name", MODELS)
@given(data=st.data())
def test_wrong_input_shape_raises(name, data):
    model, state = make_model(name, 0)
    shape = data.draw(_wrong_shapes(model.input_shape))
    if model.flattens_input:  # the MLP takes any shape with as many values
        assume(math.prod(shape) != math.prod(model.input_shape))
    x = jnp.zeros(shape)
    args = (x, state) if model.stateful else (x,)
    with pytest.raises(ValueError, match=r"The input has shape") as info:
        model(*args)  # pyright: ignore[reportCallIssue]
    assert str(model.input_shape) in str(info.value)
