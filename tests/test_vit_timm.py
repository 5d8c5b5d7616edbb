"""ViTs and timm's weights: the key map, loading, and logits against timm.

A timm ``state_dict`` is made here from a zoo ViT by its layout read backwards
(timm's key names and shapes), so that only the tests marked ``interop`` need
timm and torch. Those compare logits with timm's own ``vit_*_patch16_224``:
the relative error ``max|zoo - timm| / max|timm|`` on the same random
2x3x224x224 batch, float32, every timm parameter random (LayerNorms and
biases too, which timm starts at 1 and 0 where a swapped key would hide).
"""

import pathlib
from typing import Any

import equinox as eqx
import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

import zoo
from tests import helpers
from tests.test_vit import _small
from zoo.models._safetensors import named_arrays
from zoo.models._timm import load_timm_weights, timm_layout
from zoo.models._vit_timm import vit_layout

PARITY = 1e-4
"""The largest relative error on the logits (see the module docstring)."""

_infer = eqx.filter_jit(lambda m, x, s: zoo.apply(eqx.nn.inference_mode(m), x, s)[0])


def timm_state_dict(model: zoo.ViT, state: eqx.nn.State) -> dict[str, np.ndarray]:
    """What timm's ``state_dict()`` of the same ViT holds (timm's shapes)."""
    arrays = {k: np.asarray(v) for k, v in named_arrays(model, state).items()}
    timm_shapes = {
        "cls_token": (1, 1, model.dim),
        "pos_embed": (1, model.num_tokens, model.dim),
        "patch_embed.proj.bias": (model.dim,),
    }
    tensors = {}
    for entry in vit_layout(model):
        (target,) = entry.targets
        value = arrays[target]
        tensors[entry.key] = value.reshape(timm_shapes.get(entry.key, value.shape))
    return tensors


def test_the_layout_names_every_timm_key_once_and_fills_every_array():
    model, state = _small()
    keys = [entry.key for entry in timm_layout(model)]
    assert len(keys) == len(set(keys)) == 4 + 12 * 3 + 4
    assert keys[:4] == [
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
    ]
    assert "blocks.2.mlp.fc2.bias" in keys and keys[-2:] == ["head.weight", "head.bias"]
    targets = [t for entry in timm_layout(model) for t in entry.targets]
    assert sorted(targets) == sorted(named_arrays(model, state))
    headless, _ = _small(out_size=0)
    assert [e.key for e in timm_layout(headless)] == keys[:-2]
    # Mean-pooled: no class token, and the final norm is timm's fc_norm.
    pooled, pooled_state = _small(pool="avg")
    pooled_keys = [entry.key for entry in timm_layout(pooled)]
    assert pooled_keys[0] == "pos_embed" and "cls_token" not in pooled_keys
    assert pooled_keys[-4:-2] == ["fc_norm.weight", "fc_norm.bias"]
    assert "norm.weight" not in pooled_keys
    targets = [t for entry in timm_layout(pooled) for t in entry.targets]
    assert sorted(targets) == sorted(named_arrays(pooled, pooled_state))


def test_timm_weights_load_into_every_array():
    source, _ = _small()
    # Every array moved off its initial value (LayerNorms start at 1 and 0).
    leaves, treedef = jax.tree.flatten(source)
    keys = jax.random.split(jax.random.key(9), len(leaves))
    source = jax.tree.unflatten(
        treedef,
        [
            leaf + 0.1 * jax.random.normal(k, leaf.shape)
            if eqx.is_array(leaf)
            else leaf
            for leaf, k in zip(leaves, keys, strict=True)
        ],
    )
    tensors = timm_state_dict(source, _small()[1])
    fresh, state = _small()
    loaded, _ = load_timm_weights(fresh, state, tensors)
    assert bool(eqx.tree_equal(loaded, source))
    with pytest.raises(ValueError, match=r"1 missing: blocks\.1\.attn\.qkv\.bias"):
        load_timm_weights(
            fresh,
            state,
            {k: v for k, v in tensors.items() if k != "blocks.1.attn.qkv.bias"},
        )
    wrong = {**tensors, "pos_embed": np.zeros((1, 5, 16), np.float32)}
    with pytest.raises(ValueError, match="pos_embed"):
        load_timm_weights(fresh, state, wrong)
    with pytest.raises(ValueError, match="left over"):
        load_timm_weights(
            fresh, state, {**tensors, "fc_norm.weight": tensors["norm.weight"]}
        )


def test_create_model_loads_a_timm_file_and_draws_a_new_head(tmp_path):
    small: dict[str, Any] = {"image_size": 32, "depth": 2}
    source, state = zoo.create_model(
        "vit_tiny_patch16_224", **small, key=jax.random.key(1)
    )
    assert isinstance(source, zoo.ViT)
    path = tmp_path / "model.safetensors"
    save_file(timm_state_dict(source, state), str(path))
    loaded, _ = zoo.create_model(
        "vit_tiny_patch16_224", pretrained=path, **small, key=jax.random.key(2)
    )
    assert bool(eqx.tree_equal(loaded, source))
    new_head, _ = zoo.create_model(
        "vit_tiny_patch16_224", pretrained=path, out_size=3, **small,
        key=jax.random.key(2),
    )  # fmt: skip
    assert isinstance(new_head, zoo.ViT)
    assert new_head.output.weight.shape == (3, 192)  # pyright: ignore[reportAttributeAccessIssue]
    assert bool(eqx.tree_equal(new_head.blocks, source.blocks))


def _timm_file(name: str, path: pathlib.Path, seed: int = 0) -> Any:
    """timm's ``name`` with every parameter random, saved to ``path``."""
    timm, torch = helpers.require("timm"), helpers.require("torch")
    safetensors_torch = helpers.require("safetensors.torch")
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    safetensors_torch.save_file(model.state_dict(), str(path))
    return model


def _relative(actual: Any, expected: Any) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.mark.interop
@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "vit_small_patch16_224"])
def test_logits_and_tokens_match_timm(name, tmp_path):
    torch = helpers.require("torch")
    path = tmp_path / "model.safetensors"
    reference = _timm_file(name, path)
    model, state = zoo.create_model(name, pretrained=path, key=jax.random.key(0))
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
        ((patches, prefix),) = reference.forward_intermediates(
            torch.from_numpy(x),
            indices=[5],
            output_fmt="NLC",
            return_prefix_tokens=True,
            intermediates_only=True,
        )
    error = _relative(_infer(model, x, state), expected)
    print(f"{name}: relative error {error:.2e}")
    assert error <= PARITY, error
    (tokens,) = zoo.models.intermediates(model, x, state, indices=[5])
    theirs = np.concatenate([prefix.numpy(), patches.numpy()], axis=1)
    assert _relative(tokens, theirs) <= PARITY


@pytest.mark.interop
def test_a_mean_pooled_vit_matches_timms_avg_pooled_vision_transformer(tmp_path):
    timm, torch = helpers.require("timm"), helpers.require("torch")
    safetensors_torch = helpers.require("safetensors.torch")
    torch.manual_seed(0)
    reference = timm.models.vision_transformer.VisionTransformer(
        img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=64,
        depth=6, num_heads=4, mlp_ratio=2.0, global_pool="avg", class_token=False,
    ).eval()  # fmt: skip
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(reference.state_dict(), str(path))
    model, state = zoo.create_model(
        "vit_patch4_28", pretrained=path, pool="avg", key=jax.random.key(0)
    )
    x = np.random.default_rng(2).uniform(size=(2, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    error = _relative(_infer(model, x, state), expected)
    print(f"vit_patch4_28, pool='avg': relative error {error:.2e}")
    assert error <= PARITY, error


@pytest.mark.interop
def test_the_vit_cards_carry_timms_pretrained_config():
    timm = helpers.require("timm")
    names = [n for n in zoo.models._timm.TIMM_CARDS if n.startswith("vit_")]
    assert len(names) == 3
    for name in names:
        card, config = zoo.models.timm_card(name), timm.models.get_pretrained_cfg(name)
        assert (card.preset, card.classes) == (config.architecture, config.num_classes)
        expected = zoo.data.Preprocessing.from_timm(config.to_dict())
        assert card.preprocessing == expected, name
        assert card.preprocessing.mean == (0.5, 0.5, 0.5), name
        assert card.license == config.license
