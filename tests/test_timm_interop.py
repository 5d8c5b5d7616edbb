"""zoo against timm and the Hub: logits parity, preprocessing, downloads.

Parity is the relative error ``max|zoo - timm| / max|timm|`` over the logits
of the same random 2x3x224x224 batch, BatchNorm in inference mode, float32,
timm's model built with random weights AND random BatchNorm statistics and
affine parameters (timm starts each block's last BatchNorm at zero, which
would hide the residual branches). The Hub test runs a real HTTP server on
127.0.0.1 laid out as the Hub (``tests/_hub_server.py``).
"""

import hashlib
import json
import pathlib

import equinox as eqx
import jax
import numpy as np
import pytest

import zoo
from tests import helpers
from tests._hub_server import serve_hub
from tests.test_timm_weights import timm_state_dict
from zoo.models._hub import hub_record_path
from zoo.models._safetensors import named_arrays

pytestmark = pytest.mark.interop

PARITY = 1e-4
"""The largest relative error on the logits (see the module docstring)."""

_infer = eqx.filter_jit(lambda m, x, s: zoo.apply(eqx.nn.inference_mode(m), x, s)[0])


def _relative(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def _timm_file(name: str, path: pathlib.Path, seed: int = 0):
    """timm's ``name`` with random weights and statistics, saved to ``path``."""
    timm, torch = helpers.require("timm"), helpers.require("torch")
    safetensors_torch = helpers.require("safetensors.torch")
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
    safetensors_torch.save_file(model.state_dict(), str(path))
    return model


def _torch_forward(model, x: np.ndarray, **kwargs):
    torch = helpers.require("torch")
    with torch.no_grad():
        return model(torch.from_numpy(x), **kwargs)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_logits_match_timm(name, tmp_path):
    path = tmp_path / "model.safetensors"
    reference = _timm_file(name, path)
    model, state = zoo.create_model(name, pretrained=path, key=jax.random.key(0))
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    expected = _torch_forward(reference, x).numpy()
    error = _relative(_infer(model, x, state), expected)
    print(f"{name}: relative error {error:.2e}")
    assert error <= PARITY, error


def test_stages_and_features_match_timm(tmp_path):
    path = tmp_path / "model.safetensors"
    reference = _timm_file("resnet18", path, seed=3)
    model, state = zoo.create_model(
        "resnet18", pretrained=path, out_size=0, key=jax.random.key(0)
    )
    x = np.random.default_rng(4).standard_normal((2, 3, 224, 224)).astype(np.float32)
    torch = helpers.require("torch")
    with torch.no_grad():
        maps = reference.forward_intermediates(
            torch.from_numpy(x), intermediates_only=True
        )
        pooled = reference.forward_head(
            reference.forward_features(torch.from_numpy(x)), pre_logits=True
        )
    # timm's first intermediate is the stem's output; zoo's stages follow it
    for ours, theirs in zip(
        zoo.models.intermediates(model, x, state), maps[1:], strict=True
    ):
        assert _relative(ours, theirs.numpy()) <= PARITY
    assert _relative(_infer(model, x, state), pooled.numpy()) <= PARITY


def test_preprocess_matches_timms_eval_transform():
    timm = helpers.require("timm")
    image_module = helpers.require("PIL.Image")
    for name in ["resnet50.a1_in1k", "resnet18.tv_in1k"]:
        network = timm.create_model(name, pretrained=False)
        config = timm.data.resolve_data_config({}, model=network)
        card = zoo.models.timm_card(name)
        assert zoo.data.Preprocessing.from_timm(config) == card.preprocessing
        transform = timm.data.create_transform(**config)
        rows, cols = np.mgrid[0:300, 0:400]
        smooth = np.stack(
            [
                128 + 100 * np.sin(cols / 23.0),
                128 + 100 * np.cos(rows / 17.0),
                128 + 60 * np.sin((cols + rows) / 31.0),
            ],
            axis=-1,
        ).astype(np.uint8)
        noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), np.uint8)
        for image, worst, mean in [(smooth, 0.03, 0.01), (noise, 0.5, 0.01)]:
            expected = transform(image_module.fromarray(image)).numpy()
            actual = zoo.data.preprocess(image, card.preprocessing)
            assert actual.shape == expected.shape == (3, 224, 224)
            # PIL resamples to uint8 (one grey level is 0.017 here) with its
            # own kernels; zoo in float32 with JAX's
            difference = np.abs(actual - expected)
            assert difference.max() <= worst and difference.mean() <= mean, name


def _isolate_hub(monkeypatch, tmp_path: pathlib.Path, endpoint: str) -> None:
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no token of yours
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("ZOO_WEIGHTS_CACHE", str(tmp_path / "zoo-cache"))


def _resnet18_bytes(seed: int) -> tuple[bytes, dict[str, np.ndarray]]:
    safetensors_numpy = helpers.require("safetensors.numpy")
    model, state = zoo.create_model("resnet18", key=jax.random.key(seed))
    tensors = timm_state_dict(model, state)
    return safetensors_numpy.save(tensors), tensors


def test_hub_downloads_are_recorded_and_changed_files_refused(tmp_path, monkeypatch):
    helpers.require("huggingface_hub")
    repo, source = "timm/resnet18.a1_in1k", "hf-hub:timm/resnet18.a1_in1k"
    body, tensors = _resnet18_bytes(1)
    with serve_hub() as hub:
        _isolate_hub(monkeypatch, tmp_path, hub.endpoint)
        commit = hub.publish(repo, "model.safetensors", body)
        model, state = zoo.create_model(
            "resnet18", pretrained=source, key=jax.random.key(0)
        )
        arrays = named_arrays(model, state)
        np.testing.assert_array_equal(arrays["blocks[7].conv2.weight"],
                                      tensors["layer4.1.conv2.weight"])  # fmt: skip
        url = f"/{repo}/resolve/main/model.safetensors"
        assert f"HEAD {url}" in hub.requests and f"GET {url}" in hub.requests
        entry = f"{repo}@main/model.safetensors"
        sha256 = hashlib.sha256(body).hexdigest()
        record = json.loads(hub_record_path().read_text(encoding="utf-8"))
        assert record == {entry: {"sha256": sha256, "commit": commit}}
        assert hub_record_path().is_relative_to(tmp_path / "zoo-cache")
        blobs = list((tmp_path / "hf-cache").rglob("blobs/*"))
        assert len(blobs) == 1  # huggingface_hub's own cache

        # again: from the cache, checked against the record
        hub.requests.clear()
        zoo.create_model("resnet18", pretrained=source, key=jax.random.key(0))
        assert f"GET {url}" not in hub.requests

        # damaged in the cache: refused
        blobs[0].chmod(0o644)
        damaged = bytearray(body)
        damaged[-1] ^= 0xFF
        blobs[0].write_bytes(bytes(damaged))
        with pytest.raises(ValueError, match=f"zoo recorded {sha256} for {entry}"):
            zoo.create_model("resnet18", pretrained=source, key=jax.random.key(0))
        blobs[0].write_bytes(body)

        # replaced on the Hub under the same name: refused
        other, _ = _resnet18_bytes(2)
        hub.publish(repo, "model.safetensors", other)
        with pytest.raises(ValueError, match="replaced on the Hub"):
            zoo.create_model("resnet18", pretrained=source, key=jax.random.key(0))
        assert json.loads(hub_record_path().read_text(encoding="utf-8")) == record

        # not on the Hub: a clear error
        with pytest.raises(ValueError, match=r"Could not get model\.safetensors"):
            zoo.create_model(
                "resnet34", pretrained="hf-hub:timm/resnet34.a1_in1k",
                key=jax.random.key(0),
            )  # fmt: skip
