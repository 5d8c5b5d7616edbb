"""The ImageNet ResNets (resnet18/34/50): layout, sizes, 224x224 forwards, no head.

The property tests (tests/test_model_properties.py) cover these presets at
32x32 (``helpers.make_model``); here each runs once at its own 224x224.
"""

import pathlib
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax import lax

import zoo
from tests.helpers import assert_close, assert_vmap_matches_loop, params
from zoo.models._resnet_blocks import max_pool_3x3_s2

IMAGENET = ["resnet18", "resnet34", "resnet50"]
_apply = eqx.filter_jit(zoo.apply)


def _small(**overrides) -> tuple[zoo.ResNet, eqx.nn.State]:
    """An ImageNet-layout ResNet small enough to compile in seconds."""
    config = {
        "family": "ResNet",
        "in_channels": 3,
        "image_size": 20,
        "out_size": 5,
        "stem_width": 8,
        "widths": [16, 32],
        "depths": [1, 1],
        "stem_kind": "imagenet",
        "block_kind": "bottleneck",
        **overrides,
    }
    model, state = zoo.models.build_model(config, key=jax.random.key(0))
    assert isinstance(model, zoo.ResNet)
    return model, state


def test_parameter_counts_are_timms_and_torchvisions(getkey):
    counts = {
        name: sum(p.size for p in params(zoo.create_model(name, key=getkey())[0]))
        for name in IMAGENET
    }
    assert counts == {
        "resnet18": 11_689_512,
        "resnet34": 21_797_672,
        "resnet50": 25_557_032,
    }


def test_resnet50_layout(getkey):
    model, _ = zoo.create_model("resnet50", key=getkey())
    assert isinstance(model, zoo.ResNet)
    assert (model.stem.kernel_size, model.stem.stride) == ((7, 7), (2, 2))
    assert model.stem.padding == ((3, 3), (3, 3))
    assert len(model.blocks) == 16
    assert all(isinstance(b, zoo.models.Bottleneck) for b in model.blocks)
    first = model.blocks[0]
    assert isinstance(first, zoo.models.Bottleneck)
    # 64 -> 256 channels at stride 1: projected all the same
    assert first.shortcut is not None and first.shortcut.conv.stride == (1, 1)
    strided = [i for i, b in enumerate(model.blocks) if b.conv2.stride == (2, 2)]
    assert strided == [3, 7, 13]  # the 3x3 conv carries the stride (v1.5)
    assert all(b.conv1.stride == (1, 1) for b in model.blocks)
    projected = [i for i, b in enumerate(model.blocks) if b.shortcut is not None]
    assert projected == [0, 3, 7, 13]
    inner = [model.blocks[i].conv2.out_channels for i in projected]
    assert inner == [64, 128, 256, 512]
    assert model.output.weight.shape == (1000, 2048)  # pyright: ignore[reportAttributeAccessIssue]


@pytest.mark.parametrize("name", IMAGENET)
def test_a_224_forward_gives_logits_and_the_stages(name, getkey):
    model, state = zoo.create_model(name, key=getkey())
    model = eqx.nn.inference_mode(model)
    x = jax.random.uniform(getkey(), (3, 224, 224))

    @eqx.filter_jit
    def run(model, state, x):
        logits, _ = model(x, state)
        maps, _ = model.intermediates(x, state)
        return logits, maps

    logits, maps = run(model, state, x)
    assert logits.shape == (1000,) and bool(jnp.all(jnp.isfinite(logits)))
    expansion = 4 if name == "resnet50" else 1
    assert [m.shape for m in maps] == [
        (expansion * 64, 56, 56),
        (expansion * 128, 28, 28),
        (expansion * 256, 14, 14),
        (expansion * 512, 7, 7),
    ]
    assert_close(model.output(jnp.mean(maps[-1], axis=(1, 2))), logits)


@pytest.mark.parametrize("size", [5, 8, 9, 112])
def test_stem_max_pool_is_torchs_3x3_stride_2_pad_1(size, getkey):
    x = jax.random.normal(getkey(), (4, size, size + 3))
    expected = lax.reduce_window(
        x, -jnp.inf, lax.max, (1, 3, 3), (1, 2, 2), [(0, 0), (1, 1), (1, 1)]
    )
    assert expected.shape == (4, (size - 1) // 2 + 1, (size + 2) // 2 + 1)
    np.testing.assert_array_equal(max_pool_3x3_s2(x, "xla"), expected)
    channels_last = max_pool_3x3_s2(jnp.transpose(x, (1, 2, 0)), "nhwc")
    np.testing.assert_array_equal(jnp.transpose(channels_last, (2, 0, 1)), expected)


def test_the_small_image_presets_keep_their_configs():
    # The options added for ImageNet stay out of configs that use the defaults,
    # so the shipped weight files and cards are as they were.
    for name in ["resnet8", "resnet20"]:
        model, _ = zoo.create_model(name, key=jax.random.key(0))
        config = model.config()
        assert config == dict(zoo.models.model_spec(name).config, bn_momentum=0.9,
                              dropout=0.0, activation="relu", dtype=None)  # fmt: skip
        assert "stem_kind" not in config and "block_kind" not in config
    model, _ = zoo.create_model("resnet50", key=jax.random.key(0))
    assert model.config()["stem_kind"] == "imagenet"
    assert model.config()["block_kind"] == "bottleneck"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"stem_kind": "deep"}, "stem_kind"),
        ({"block_kind": "wide"}, "block_kind"),
        ({"widths": [16, 30]}, "multiples of 4"),
        ({"out_size": -1}, "out_size"),
    ],
)
def test_bad_kinds_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        _small(**overrides)


def test_no_head_returns_the_pooled_features(getkey):
    model, state = _small()
    headless, headless_state = _small(out_size=0)
    assert isinstance(headless.output, eqx.nn.Identity)
    assert headless.config()["out_size"] == 0
    rebuilt, _ = zoo.models.build_model(headless.config(), key=getkey())
    assert isinstance(rebuilt, zoo.ResNet)
    assert isinstance(rebuilt.output, eqx.nn.Identity)
    xs = jax.random.uniform(getkey(), (3, 3, 20, 20))
    pooled, _ = _apply(eqx.nn.inference_mode(headless), xs, headless_state)
    assert pooled.shape == (3, 32)
    # the same backbone (same key), so the same features as the headed model's
    assert_close(pooled, zoo.features(model, xs, state))


@pytest.mark.parametrize("block_kind", ["basic", "bottleneck"])
def test_both_conv_paths_compute_the_same_function(block_kind, getkey):
    model, state = _small(block_kind=block_kind)
    xs = jax.random.normal(getkey(), (4, 3, 20, 20))
    results = []
    for path in ["xla", "nhwc"]:
        on_path = zoo.models.with_conv_path(model, path)
        trained, new_state = _apply(on_path, xs, state)
        inferred, _ = _apply(eqx.nn.inference_mode(on_path), xs, new_state)
        maps = zoo.models.intermediates(on_path, xs, new_state)
        results.append((trained, inferred, maps))
    (a, b, c), (d, e, f) = results
    assert_close(d, a)
    assert_close(e, b)
    for x, y in zip(f, c, strict=True):
        assert_close(y, x)


def test_the_docs_features_block_runs(capsys):
    page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "imagenet.md"
    text = page.read_text(encoding="utf-8")
    match = re.search(
        r"<!-- test: imagenet-features -->\n```python\n(.*?)```", text, re.S
    )
    assert match is not None, "docs/imagenet.md has no block marked imagenet-features"
    exec(compile(match.group(1), "docs/imagenet.md", "exec"), {})
    out = capsys.readouterr().out
    assert (
        "[(2, 64, 56, 56), (2, 128, 28, 28), (2, 256, 14, 14), (2, 512, 7, 7)]" in out
    )
    assert "(2, 512) True" in out


# The properties every preset has (tests/test_model_properties.py), for the
# ImageNet layout at a small width: the presets themselves are too large for
# Hypothesis' draws there.
seeds = st.integers(min_value=0, max_value=2**31 - 1)
KINDS = ["basic", "bottleneck"]
_jit_grad = eqx.filter_jit(eqx.filter_grad(lambda m, s, x, y, k: _loss(m, s, x, y, k)))
_jit_loss = eqx.filter_jit(lambda m, s, x, y, k: _loss(m, s, x, y, k))


def _loss(model, state, xs, labels, key):
    logits, _ = zoo.apply(model, xs, state, key=key)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def _seeded(seed: int, **overrides) -> tuple[zoo.ResNet, eqx.nn.State]:
    config = {**_small()[0].config(), "dropout": 0.25, **overrides}
    model, state = zoo.models.build_model(config, key=jax.random.key(seed))
    assert isinstance(model, zoo.ResNet)
    return model, state


def _inputs(batch: int, seed: int, dtype=jnp.float32) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (batch, 3, 20, 20), dtype)


@pytest.mark.parametrize("block_kind", KINDS)
@settings(max_examples=4)
@given(seed=seeds, batch=st.integers(1, 3))
def test_small_imagenet_resnet_vmap_equals_loop(block_kind, seed, batch):
    model, state = _seeded(seed, block_kind=block_kind)
    assert_vmap_matches_loop(
        eqx.nn.inference_mode(model), state, _inputs(batch, seed + 1)
    )


@pytest.mark.parametrize("block_kind", KINDS)
@settings(max_examples=2)
@given(seed=seeds)
def test_small_imagenet_resnet_jit_equals_eager(block_kind, seed):
    model, state = _seeded(seed, block_kind=block_kind)
    xs, key = _inputs(3, seed + 1), jax.random.key(seed + 2)
    eager, eager_state = zoo.apply(model, xs, state, key=key)
    jitted, jit_state = _apply(model, xs, state, key=key)
    assert_close(jitted, eager, rtol=1e-5)
    leaves = zip(jax.tree.leaves(eager_state), jax.tree.leaves(jit_state), strict=True)
    for a, b in leaves:
        assert_close(b, a, rtol=1e-5)


@pytest.mark.parametrize("block_kind", KINDS)
@settings(max_examples=3)
@given(seed=seeds)
def test_small_resnet_gradient_matches_finite_differences(block_kind, seed):
    # As in test_model_properties: float64, a smooth activation, a central
    # difference along a unit direction. The ImageNet stem's max pooling has a
    # kink wherever two values of a window tie within eps, so it is left out
    # here (its gradient is the one of reduce_window, tested below).
    with jax.enable_x64(True):
        model, state = _seeded(
            seed, block_kind=block_kind, stem_kind="cifar", dtype="float64",
            activation="softplus", dropout=0.0,
        )  # fmt: skip
        xs = _inputs(3, seed + 1, jnp.float64)
        labels = jax.random.randint(jax.random.key(seed + 2), (3,), 0, 5)
        key = jax.random.key(seed + 3)
        grads = _jit_grad(model, state, xs, labels, key)
        leaves, treedef = jax.tree.flatten(eqx.filter(model, eqx.is_inexact_array))
        keys = jax.random.split(jax.random.key(seed + 4), len(leaves))
        direction = [
            jax.random.normal(k, p.shape, p.dtype)
            for k, p in zip(keys, leaves, strict=True)
        ]
        norm = jnp.sqrt(sum(jnp.vdot(d, d) for d in direction))
        v = jax.tree.unflatten(treedef, [d / norm for d in direction])
        analytic = sum(
            jnp.vdot(g, d)
            for g, d in zip(params(grads), jax.tree.leaves(v), strict=True)
        )
        eps = 1e-5

        def shifted(sign):
            moved = eqx.apply_updates(model, jax.tree.map(lambda d: sign * eps * d, v))
            return _jit_loss(moved, state, xs, labels, key)

        numeric = (shifted(1.0) - shifted(-1.0)) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-10)


def test_stem_max_pool_gradient_is_reduce_windows(getkey):
    x = jax.random.normal(getkey(), (3, 9, 10))  # no ties: one maximum a window

    def reference(x):
        return lax.reduce_window(
            x, -jnp.inf, lax.max, (1, 3, 3), (1, 2, 2), [(0, 0), (1, 1), (1, 1)]
        )

    weights = jax.random.normal(getkey(), reference(x).shape)
    ours = jax.grad(lambda x: jnp.sum(max_pool_3x3_s2(x, "xla") * weights))(x)
    theirs = jax.grad(lambda x: jnp.sum(reference(x) * weights))(x)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("block_kind", KINDS)
@settings(max_examples=3)
@given(seed=seeds)
def test_small_imagenet_resnet_every_parameter_gets_a_gradient(block_kind, seed):
    model, state = _seeded(seed, block_kind=block_kind)
    xs = _inputs(8, seed + 1)
    grads = _jit_grad(model, state, xs, jnp.arange(8) % 5, jax.random.key(seed))
    flat, _ = jax.tree_util.tree_flatten_with_path(eqx.filter(grads, eqx.is_array))
    for path, g in flat:
        assert bool(jnp.all(jnp.isfinite(g))), jax.tree_util.keystr(path)
        assert bool(jnp.any(g != 0)), jax.tree_util.keystr(path)


@pytest.mark.parametrize("block_kind", KINDS)
@settings(max_examples=3)
@given(seed=seeds)
def test_small_imagenet_resnet_keys_and_serialisation(
    block_kind, seed, tmp_path_factory
):
    model, state = _seeded(seed, block_kind=block_kind)
    again, _ = _seeded(seed, block_kind=block_kind)
    other, _ = _seeded(seed + 1, block_kind=block_kind)
    assert bool(eqx.tree_equal(model, again))
    assert not np.array_equal(model.stem.weight, other.stem.weight)
    xs = _inputs(4, seed + 1)
    _, state = _apply(model, xs, state, key=jax.random.key(seed))  # move stats
    path = tmp_path_factory.mktemp("ckpt") / "model.eqx"
    eqx.tree_serialise_leaves(path, (model, state))
    loaded = eqx.tree_deserialise_leaves(path, _seeded(seed + 7, block_kind=block_kind))
    assert bool(eqx.tree_equal((model, state), loaded))
