"""The Vision Transformer family: its layout, its parts and its timm key map.

The contracts every preset keeps (vmap, jit, gradients, keys, serialisation)
are in tests/test_model_properties.py, where the 224x224 presets are built
small (``helpers.make_model``); here each of them runs once at 224x224.
The timm key map and logits against timm itself are in tests/test_vit_timm.py.
"""

import json
import pathlib
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from tests.helpers import assert_close

IMAGENET_VITS = {"vit_tiny_patch16_224": 192, "vit_small_patch16_224": 384}
"""The 224x224 presets and their widths."""

_infer = eqx.filter_jit(lambda m, x, s: zoo.apply(eqx.nn.inference_mode(m), x, s)[0])


def _small(**overrides):
    """A ViT of 3 blocks of width 16 on 3x16x16 images: 16 patches of 4x4."""
    config = {"patch_size": 4, "dim": 16, "depth": 3, "num_heads": 2, **overrides}
    out_size = config.pop("out_size", 5)
    return eqx.nn.make_with_state(zoo.ViT)(
        3, 16, out_size, **config, key=jax.random.key(0)
    )


def test_parameter_counts_are_timms():
    for name, count in [
        ("vit_tiny_patch16_224", 5_717_416),
        ("vit_small_patch16_224", 22_050_664),
    ]:
        model = eqx.filter_eval_shape(
            lambda name=name: zoo.create_model(name, key=jax.random.key(0))[0]
        )
        sizes = [leaf.size for leaf in jax.tree.leaves(model) if hasattr(leaf, "size")]
        assert sum(sizes) == count, name


@pytest.mark.parametrize("name", list(IMAGENET_VITS))
def test_a_224_forward_gives_logits_and_the_tokens(name):
    model, state = zoo.create_model(name, key=jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (1, 3, 224, 224))
    logits = _infer(model, x, state)
    assert logits.shape == (1, 1000)
    assert bool(jnp.all(jnp.isfinite(logits)))
    assert model.num_tokens == 197  # pyright: ignore[reportAttributeAccessIssue]
    tokens = jax.eval_shape(
        lambda x: zoo.models.intermediates(model, x, state, indices=[0, -1]), x
    )
    assert [t.shape for t in tokens] == [(1, 197, IMAGENET_VITS[name])] * 2


def test_the_patch_embedding_is_the_convolution():
    model, _ = _small()
    x = jax.random.normal(jax.random.key(2), (3, 16, 16))
    by_conv = model.patch_embed(x).reshape(model.dim, -1).T
    tokens = model.embed(x)
    assert_close(tokens[1:], by_conv + model.pos_embed[1:], rtol=1e-5)
    assert model.cls_token is not None
    np.testing.assert_array_equal(tokens[0], model.cls_token + model.pos_embed[0])
    pooled, _ = _small(pool="avg")
    assert pooled.cls_token is None and pooled.num_tokens == 16
    assert_close(pooled.embed(x), by_conv + pooled.pos_embed, rtol=1e-5)


def test_self_attention_is_scaled_dot_product_attention_per_head():
    model, _ = _small(dim=24, num_heads=3)
    attention = model.blocks[0].attn
    assert attention.qkv.bias is not None and attention.proj.bias is not None
    x = jax.random.normal(jax.random.key(3), (model.num_tokens, 24))
    qkv = (x @ attention.qkv.weight.T + attention.qkv.bias[None]).reshape(-1, 3, 3, 8)
    heads = jax.nn.dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])
    expected = heads.reshape(-1, 24) @ attention.proj.weight.T
    expected = expected + attention.proj.bias[None]
    assert_close(attention(x), expected, rtol=1e-5)


def test_intermediates_are_the_blocks_in_the_order_asked():
    model, state = _small()
    x = jax.random.normal(jax.random.key(4), (3, 16, 16))
    every, same = model.intermediates(x, state)
    assert same is state and len(every) == 3
    tokens = model.embed(x)
    for block, after in zip(model.blocks, every, strict=True):
        tokens = block(tokens)
        assert_close(after, tokens, rtol=1e-6)
    chosen, _ = model.intermediates(x, state, indices=[-1, 0])
    assert_close(chosen[0], every[2], rtol=0)
    assert_close(chosen[1], every[0], rtol=0)
    logits, _ = model(x, state)
    assert_close(model.output(model.norm(every[-1][0])), logits, rtol=1e-6)
    for bad in (3, -4):
        with pytest.raises(ValueError, match="out of range"):
            model.intermediates(x, state, indices=[bad])


def test_avg_pool_gives_the_head_the_tokens_mean_after_the_final_norm():
    model, state = _small(pool="avg")
    x = jax.random.normal(jax.random.key(4), (3, 16, 16))
    (last,), _ = model.intermediates(x, state, indices=[-1])
    assert last.shape == (16, 16)
    logits, _ = model(x, state)
    expected = model.output(model.norm(jnp.mean(last, axis=0)))
    assert_close(logits, expected, rtol=1e-6)
    # The class-token model has one more token.
    token_model, _ = _small()
    assert token_model.pos_embed.shape == (17, 16)
    assert model.config()["pool"] == "avg"
    # The default is left out, so configs written before `pool` stay the same.
    assert "pool" not in token_model.config()
    again, _ = zoo.models.build_model(model.config(), key=jax.random.key(0))
    assert bool(eqx.tree_equal(again, model))


def test_the_conv_stem_is_strided_3x3_convolutions_with_the_activation_between():
    model, state = _small(stem="conv")
    stem = model.patch_embed
    assert isinstance(stem, zoo.models.ConvStem)
    assert [c.weight.shape for c in stem.convs] == [(8, 3, 3, 3), (16, 8, 3, 3)]
    x = jax.random.normal(jax.random.key(2), (3, 16, 16))

    def conv(h, layer):  # NCHW, OIHW: the convolution written out with lax
        out = jax.lax.conv_general_dilated(
            h[None], layer.weight, (2, 2), ((1, 1), (1, 1))
        )[0]
        return out + layer.bias

    first = conv(x, stem.convs[0])
    expected = conv(jax.nn.gelu(first, approximate=False), stem.convs[1])
    assert expected.shape == (16, 4, 4)  # 16 / 4 = 4 rows and columns of tokens
    tokens = model.embed(x)
    assert model.num_tokens == 17 and tokens.shape == (17, 16)
    assert_close(
        tokens[1:], expected.reshape(16, -1).T + model.pos_embed[1:], rtol=1e-5
    )
    logits, same = model(x, state)
    assert logits.shape == (5,) and same is state
    # A stem of 16x16 patches halves four times, widening 2, 4, 8, 16 channels.
    deep, _ = _small(stem="conv", patch_size=16)
    assert isinstance(deep.patch_embed, zoo.models.ConvStem)
    assert [c.weight.shape[0] for c in deep.patch_embed.convs] == [2, 4, 8, 16]
    assert deep.num_tokens == 2
    with pytest.raises(ValueError, match="power of two"):
        eqx.nn.make_with_state(zoo.ViT)(
            1, 12, 5, patch_size=3, dim=16, depth=1, num_heads=2, stem="conv",
            key=jax.random.key(0),
        )  # fmt: skip


def test_the_conv_stem_config_round_trips_and_has_no_timm_layout():
    model, state = _small(stem="conv")
    config = json.loads(json.dumps(model.config()))
    assert config["stem"] == "conv"
    assert "stem" not in _small()[0].config()  # the default is left out
    again, _ = zoo.models.build_model(config, key=jax.random.key(0))
    assert bool(eqx.tree_equal(again, model))
    with pytest.raises(ValueError, match="stem='conv' has no timm layout"):
        zoo.models.load_timm_weights(model, state, {})
    rows = {row.name: row for row in zoo.models.summary(model, state).layers}
    stem_parameters = (3 * 9 + 1) * 8 + (8 * 9 + 1) * 16
    assert rows["embedding"].parameters == stem_parameters + 17 * 16 + 16


def test_no_head_returns_the_pooled_features():
    model, state = _small()
    headless, headless_state = _small(out_size=0)
    assert isinstance(headless.output, eqx.nn.Identity)
    x = jax.random.uniform(jax.random.key(5), (2, 3, 16, 16))
    pooled = zoo.features(model, x, state)
    assert pooled.shape == (2, 16)
    assert_close(_infer(headless, x, headless_state), pooled, rtol=1e-6)
    config = json.loads(json.dumps(headless.config()))
    assert config["out_size"] == 0
    again, _ = zoo.models.build_model(config, key=jax.random.key(0))
    assert bool(eqx.tree_equal(again, headless))
    with pytest.raises(ValueError, match="out_size=0"):
        zoo.head_only(headless)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"patch_size": 5}, "whole number of"),
        ({"num_heads": 3}, "does not divide"),
        ({"depth": 0}, "must be >= 1"),
        ({"out_size": -1}, "must be >= 1"),
        ({"dropout": 1.0}, "dropout"),
        ({"mlp_ratio": 0.01}, "mlp_ratio"),
        ({"activation": "swish"}, "Unknown activation"),
        ({"pool": "max"}, "pool"),
        ({"stem": "hybrid"}, "stem"),
        ({"stem": "conv", "patch_size": 16, "dim": 18}, "divisible by 8"),
    ],
)
def test_impossible_configurations_fail_at_construction(overrides, match):
    with pytest.raises(ValueError, match=match):
        _small(**overrides)


def test_dropout_needs_a_key_in_training_and_is_off_in_inference():
    model, state = _small(dropout=0.5)
    x = jax.random.uniform(jax.random.key(6), (3, 16, 16))
    with pytest.raises(ValueError, match="needs `key=`"):
        model(x, state)
    one, _ = model(x, state, key=jax.random.key(7))
    two, _ = model(x, state, key=jax.random.key(8))
    assert not np.allclose(one, two)
    off = eqx.nn.inference_mode(model)
    assert_close(off(x, state)[0], off(x, state, key=jax.random.key(7))[0], rtol=0)


def test_the_docs_tokens_block_runs(capsys):
    page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "vit.md"
    text = page.read_text(encoding="utf-8")
    match = re.search(r"<!-- test: vit-tokens -->\n```python\n(.*?)```", text, re.S)
    assert match is not None, "docs/vit.md has no block marked vit-tokens"
    exec(compile(match.group(1), "docs/vit.md", "exec"), {})
    out = capsys.readouterr().out
    assert "[(2, 50, 64), (2, 50, 64)]" in out
    assert "(2, 64) True" in out


def test_the_summary_has_a_row_per_block_with_its_tokens():
    model, state = zoo.create_model("vit_patch4_28", key=jax.random.key(0))
    rows = zoo.summary(model, state).layers
    assert [(r.name, r.output_shape) for r in rows] == [
        ("embedding", (50, 64)),
        *((f"blocks[{i}]", (50, 64)) for i in range(6)),
        ("norm (class token)", (64,)),
        ("output", (10,)),
    ]
    assert rows[0].parameters == 16 * 64 + 64 + 64 + 50 * 64
    assert sum(r.parameters for r in rows) == 205_962
    pooled, _ = zoo.create_model("vit_patch4_28", pool="avg", key=jax.random.key(0))
    rows = zoo.summary(pooled, state).layers
    assert [(r.name, r.output_shape) for r in rows][::7] == [
        ("embedding", (49, 64)),
        ("norm (mean token)", (64,)),
    ]
    assert rows[0].parameters == 16 * 64 + 64 + 49 * 64
