"""timm weights without timm: the key map, the loader's refusals, local files,
the Hub's SHA-256 record, and the preprocessing of ImageNet weights.

A timm ``state_dict`` is made here from a zoo model by its layout read
backwards (timm's key names, PyTorch's shapes), so none of these tests needs
timm or torch; tests/test_timm_interop.py compares with timm itself.
"""

import json
import os
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

import zoo
from tests.helpers import assert_close
from zoo.models._conv import batch_norm_channels_last, to_channels_last
from zoo.models._hub import check_recorded_sha256, hub_record_path, parse_hub_source
from zoo.models._safetensors import fill_arrays, named_arrays
from zoo.models._timm import SETTLED_COUNT, is_timm_source, timm_layout

_infer = eqx.filter_jit(lambda m, x, s: zoo.apply(eqx.nn.inference_mode(m), x, s)[0])


def _random_stats(model, state, seed: int):
    """``state`` with random BatchNorm running statistics (as a trained model's)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, array in named_arrays(model, state).items():
        if name.endswith("batch_state_index[0]"):
            arrays[name] = rng.normal(0, 0.2, array.shape).astype(np.float32)
        elif name.endswith("batch_state_index[1]"):
            arrays[name] = rng.uniform(0.5, 2.0, array.shape).astype(np.float32)
    return fill_arrays(model, state, arrays)


def timm_state_dict(model, state) -> dict[str, np.ndarray]:
    """What timm's ``state_dict()`` of the same network holds, as NumPy."""
    arrays = named_arrays(model, state)
    tensors = {}
    for entry in timm_layout(model):
        if not entry.targets:  # num_batches_tracked
            tensors[entry.key] = np.asarray(0, np.int64)
            continue
        (target,) = entry.targets
        tensors[entry.key] = np.asarray(arrays[target])
    return tensors


@pytest.fixture(scope="module")
def resnet18():
    """A resnet18 with random weights and statistics, and its timm state_dict."""
    model, state = zoo.create_model("resnet18", key=jax.random.key(1))
    model, state = _random_stats(model, state, 2)
    return model, state, timm_state_dict(model, state)


@pytest.fixture(scope="module")
def resnet18_file(resnet18, tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("timm") / "model.safetensors"
    save_file(resnet18[2], str(path))
    return path


def test_the_resnet_layouts_name_every_key_once():
    for name, keys in [("resnet18", 122), ("resnet34", 218), ("resnet50", 320)]:
        model, state = zoo.create_model(name, key=jax.random.key(0))
        layout = timm_layout(model)
        assert len(layout) == keys  # as many as timm's state_dict() holds
        assert len({e.key for e in layout}) == keys
        targets = [t for e in layout for t in e.targets]
        counters = [n for n in named_arrays(model, state) if "batch_counter" in n]
        assert sorted(targets + counters) == sorted(named_arrays(model, state))
    model, _ = zoo.create_model("resnet50", key=jax.random.key(0))
    keys = [e.key for e in timm_layout(model)]
    assert keys[:6] == [
        "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
        "bn1.running_var", "bn1.num_batches_tracked",
    ]  # fmt: skip
    assert (
        "layer1.0.downsample.0.weight" in keys
        and "layer1.1.downsample.0.weight" not in keys
    )
    assert "layer4.2.conv3.weight" in keys and keys[-2:] == ["fc.weight", "fc.bias"]


def test_loading_fills_every_array_and_settles_the_counters(resnet18):
    source, source_state, tensors = resnet18
    model, state = zoo.create_model("resnet18", key=jax.random.key(5))
    loaded, loaded_state = zoo.models.load_timm_weights(model, state, tensors)
    want, got = named_arrays(source, source_state), named_arrays(loaded, loaded_state)
    for name, array in want.items():
        if name.endswith("batch_counter"):
            assert int(got[name]) == SETTLED_COUNT, name
        else:
            np.testing.assert_array_equal(got[name], array, err_msg=name)


@pytest.mark.parametrize("path", ["xla", "nhwc"])
def test_settled_statistics_stay_unscaled_after_a_training_step(path):
    # Equinox divides the running statistics by 1 - momentum**counter; at the
    # settled count (and after it) that factor is exactly 1.
    norm = eqx.nn.BatchNorm(3, axis_name="batch", momentum=0.9, mode="batch")
    state = eqx.nn.State(norm)
    assert norm.batch_counter is not None and norm.batch_state_index is not None
    mean, var = jnp.array([0.5, -1.0, 2.0]), jnp.array([1.5, 0.25, 4.0])
    state = state.set(norm.batch_state_index, (mean, var))
    state = state.set(norm.batch_counter, jnp.asarray(SETTLED_COUNT + 1))
    x = jax.random.normal(jax.random.key(0), (3, 4, 4))
    inference = eqx.nn.inference_mode(norm)
    with jax.numpy_dtype_promotion("standard"):
        if path == "xla":
            y, _ = inference(x, state)
        else:
            y, _ = batch_norm_channels_last(inference, to_channels_last(x), state)
            y = jnp.transpose(y, (2, 0, 1))
    expected = (x - mean[:, None, None]) / jnp.sqrt(var[:, None, None] + 1e-5)
    assert_close(y, expected, rtol=1e-6)


def test_a_missing_key_is_named_and_nothing_loads(resnet18):
    _, _, tensors = resnet18
    model, state = zoo.create_model("resnet18", key=jax.random.key(0))
    broken = {k: v for k, v in tensors.items() if k != "layer2.1.bn1.running_var"}
    with pytest.raises(ValueError, match=r"1 missing: layer2\.1\.bn1\.running_var\. "):
        zoo.models.load_timm_weights(model, state, broken)
    # num_batches_tracked carries nothing zoo uses: it may be absent
    lean = {k: v for k, v in tensors.items() if "num_batches_tracked" not in k}
    zoo.models.load_timm_weights(model, state, lean)


def test_an_extra_key_is_named(resnet18):
    _, _, tensors = resnet18
    model, state = zoo.create_model("resnet18", key=jax.random.key(0))
    extra = {**tensors, "head.fc.weight": np.zeros((2, 2), np.float32)}
    with pytest.raises(ValueError, match=r"1 left over: head\.fc\.weight\. Nothing"):
        zoo.models.load_timm_weights(model, state, extra)


def test_a_wrong_shape_is_named(resnet18):
    _, _, tensors = resnet18
    model, state = zoo.create_model("resnet18", key=jax.random.key(0))
    wrong = {**tensors, "fc.weight": np.zeros((10, 512), np.float32)}
    with pytest.raises(
        ValueError,
        match=r"of another shape \(timm for zoo\): fc\.weight \(10, 512\) for "
        r"output\.weight \(1000, 512\)\. Nothing was loaded",
    ):
        zoo.models.load_timm_weights(model, state, wrong)


def test_create_model_loads_a_timm_file(resnet18, resnet18_file):
    source, source_state, _ = resnet18
    xs = jax.random.uniform(jax.random.key(7), (2, 3, 224, 224))
    expected = _infer(source, xs, source_state)
    for pretrained in [resnet18_file, str(resnet18_file)]:
        model, state = zoo.create_model(
            "resnet18", pretrained=pretrained, key=jax.random.key(0)
        )
        assert_close(_infer(model, xs, state), expected)
    # a new head: the backbone from the file, the head drawn from the key
    model, state = zoo.create_model(
        "resnet18", pretrained=resnet18_file, out_size=7, key=jax.random.key(0)
    )
    assert model.output.weight.shape == (7, 512)  # pyright: ignore[reportAttributeAccessIssue]
    assert_close(zoo.features(model, xs, state), zoo.features(source, xs, source_state))
    headless, state = zoo.create_model(
        "resnet18", pretrained=resnet18_file, out_size=0, key=jax.random.key(0)
    )
    assert_close(_infer(headless, xs, state), zoo.features(source, xs, source_state))


def test_a_timm_file_of_another_preset_is_refused(resnet18_file):
    with pytest.raises(ValueError, match=r"missing: layer1\.2\.conv1\.weight"):
        zoo.create_model("resnet34", pretrained=resnet18_file, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"of another shape.*only out_size="):
        zoo.create_model(
            "resnet18", pretrained=resnet18_file, stem_width=32, key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="no timm weights to MLP"):
        zoo.create_model("mlp", pretrained=resnet18_file, key=jax.random.key(0))
    with pytest.raises(ValueError, match="no such file"):
        zoo.create_model(
            "resnet18", pretrained="nowhere/model.safetensors", key=jax.random.key(0)
        )


def test_timm_sources_are_told_from_datasets(tmp_path):
    assert not is_timm_source("mnist") and not is_timm_source("fashion_mnist")
    assert is_timm_source("hf-hub:timm/resnet50.a1_in1k")
    assert is_timm_source("model.safetensors") and is_timm_source(tmp_path / "x")
    assert is_timm_source("weights/resnet50")
    assert parse_hub_source("hf-hub:timm/resnet50.a1_in1k") == (
        "timm/resnet50.a1_in1k",
        None,
    )
    assert parse_hub_source("hf-hub:me/net@v2") == ("me/net", "v2")
    for bad in ["hf-hub:resnet50", "hf-hub:timm/", "hf-hub:/x/y", "timm/x"]:
        with pytest.raises(ValueError, match="hf-hub:<owner>/<name>"):
            parse_hub_source(bad)


def test_a_timm_repository_of_another_architecture_is_refused():
    # checked before anything is downloaded (or huggingface_hub imported)
    with pytest.raises(ValueError, match="holds timm's 'resnet50', not 'resnet18'"):
        zoo.create_model(
            "resnet18", pretrained="hf-hub:timm/resnet50.a1_in1k", key=jax.random.key(0)
        )


def test_the_hub_record_keeps_the_first_sha256_and_refuses_a_change(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("ZOO_WEIGHTS_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"first")
    entry = "timm/resnet18.a1_in1k@main/model.safetensors"
    first = check_recorded_sha256(entry, weights, "a" * 40)
    record = json.loads(hub_record_path().read_text(encoding="utf-8"))
    assert record == {entry: {"sha256": first, "commit": "a" * 40}}
    assert hub_record_path() == tmp_path / "cache" / "hf-hub" / "sha256.json"
    assert check_recorded_sha256(entry, weights, "b" * 40) == first
    weights.write_bytes(b"second")
    with pytest.raises(ValueError, match=rf"zoo recorded {first} for {entry}"):
        check_recorded_sha256(entry, weights, "b" * 40)
    assert json.loads(hub_record_path().read_text(encoding="utf-8")) == record
    # another entry is recorded beside it, atomically (no file left behind)
    check_recorded_sha256("me/net@main/model.safetensors", weights, "")
    assert len(json.loads(hub_record_path().read_text(encoding="utf-8"))) == 2
    assert sorted(p.name for p in hub_record_path().parent.iterdir()) == ["sha256.json"]
    hub_record_path().write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="delete it"):
        check_recorded_sha256(entry, weights, "")
    hub_record_path().unlink()
    os.symlink(weights, hub_record_path())
    with pytest.raises(ValueError, match="symbolic link"):
        check_recorded_sha256(entry, weights, "")


def test_timm_cards_carry_timms_preprocessing():
    card = zoo.models.timm_card("resnet50.a1_in1k")
    assert card.preset == "resnet50" and card.classes == 1000
    assert card.source == "hf-hub:timm/resnet50.a1_in1k"
    assert zoo.models.timm_card(card.source) == card
    prep = card.preprocessing
    assert (prep.resize, prep.crop, prep.interpolation) == (235, 224, "bicubic")
    assert prep.mean == zoo.data.IMAGENET_MEAN and prep.std == zoo.data.IMAGENET_STD
    tv = zoo.models.timm_card("resnet18.tv_in1k").preprocessing
    assert (tv.resize, tv.crop, tv.interpolation) == (256, 224, "bilinear")
    for name in zoo.models._timm.TIMM_CARDS:
        assert zoo.models.timm_card(name).preset in zoo.list_models()
    with pytest.raises(KeyError, match="from_timm"):
        zoo.models.timm_card("resnet50.nothing")


def test_preprocess_resizes_the_shorter_side_and_crops_the_centre():
    prep = zoo.data.Preprocessing(resize=6, crop=4, mean=(0.0,), std=(1.0,))
    # no resize needed (the shorter side is 6): a pure centre crop, whose
    # offsets are torchvision's round((length - crop) / 2)
    image = (np.arange(6 * 11, dtype=np.uint8).reshape(6, 11, 1)) * 3
    out = zoo.data.preprocess(image, prep)
    np.testing.assert_array_equal(out[0] * 255, image[1:5, 4:8, 0])
    assert out.dtype == np.float32
    chw = zoo.data.preprocess(np.moveaxis(image, 2, 0), prep)
    np.testing.assert_array_equal(chw, out)
    rgb = zoo.data.Preprocessing(resize=8, crop=8)
    grey = rgb(np.zeros((16, 32), np.uint8))
    assert grey.shape == (3, 8, 8)  # repeated to RGB
    black = -np.divide(zoo.data.IMAGENET_MEAN, zoo.data.IMAGENET_STD)
    np.testing.assert_allclose(grey[:, 0, 0], black, rtol=1e-6)
    assert rgb(np.full((40, 20, 3), 128, np.uint8)).shape == (3, 8, 8)
    timm_config = {"input_size": (3, 224, 224), "crop_pct": 0.875}
    timm_config.update(mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic")
    from_timm = zoo.data.Preprocessing.from_timm(timm_config)
    assert (from_timm.resize, from_timm.crop, from_timm.mean) == (256, 224, (0.5,) * 3)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((3, 10, 3), np.uint8), "layout='hwc' or layout='chw'"),
        (np.zeros((10, 10, 4), np.uint8), "4 channels"),
        (np.zeros((2, 10, 10, 3), np.uint8), "ONE image"),
        (np.full((10, 10, 3), 255.0, np.float32), "divide by 255"),
        (np.zeros((10, 10, 3), np.int32), "uint8"),
    ],
)
def test_preprocess_refuses_what_it_cannot_read(image, match):
    with pytest.raises(ValueError, match=match):
        zoo.data.Preprocessing(resize=8, crop=8)(image)


def test_preprocessing_refuses_impossible_numbers():
    with pytest.raises(ValueError, match="crop <= resize"):
        zoo.data.Preprocessing(resize=200, crop=224)
    with pytest.raises(ValueError, match="interpolation"):
        zoo.data.Preprocessing(resize=8, crop=8, interpolation="lanczos")
    with pytest.raises(ValueError, match="positive std"):
        zoo.data.Preprocessing(resize=8, crop=8, std=(0.0, 1.0, 1.0))
