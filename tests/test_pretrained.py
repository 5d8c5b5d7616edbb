"""Pretrained weights: shipped files match their cards, lookup order, downloads.

The downloads run against a real HTTP server on 127.0.0.1 that serves a
temporary folder under a path prefix picking its behaviour: ``/good/`` or
``/corrupt/`` (one byte of every weight file flipped).
"""

import dataclasses
import json
import pathlib
import shutil
from collections.abc import Iterator

import equinox as eqx
import jax
import numpy as np
import pytest
from _file_server import FileServer, serve

import zoo
from zoo.data import load_dataset
from zoo.data._download import sha256_file
from zoo.models import _cards
from zoo.models._pretrained import PACKAGE_WEIGHTS, ModelCard
from zoo.models._safetensors import named_arrays
from zoo.train import evaluate

SHIPPED = sorted(PACKAGE_WEIGHTS.glob("*.json"))
MAX_BYTES = 8 * 1024 * 1024


@pytest.fixture(autouse=True)
def _no_user_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path):
    """Only the package's weights, and a cache of this test's own."""
    monkeypatch.delenv("ZOO_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("ZOO_WEIGHTS_URL", raising=False)
    monkeypatch.delenv("ZOO_WEIGHTS_ALLOW_HTTP", raising=False)
    monkeypatch.setenv("ZOO_WEIGHTS_CACHE", str(tmp_path / "cache"))


def _listing(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _card(path: pathlib.Path) -> ModelCard:
    return ModelCard.from_json(json.loads(path.read_text()), source=str(path))


def test_weights_ship_for_the_promised_presets():
    shipped = {(c.preset, c.dataset) for c in map(_card, SHIPPED)}
    for preset in ("mlp", "stax_cnn", "lenet5"):
        for dataset in ("mnist", "fashion_mnist"):
            assert (preset, dataset) in shipped


@pytest.mark.parametrize("card_path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_weights_match_their_card_on_the_whole_test_set(
    card_path: pathlib.Path,
):
    card = _card(card_path)
    weights = card_path.with_name(card.file)
    assert card_path.stem == weights.stem == f"{card.preset}-{card.dataset}"
    assert sha256_file(weights) == card.sha256
    assert weights.stat().st_size < MAX_BYTES
    model, state = zoo.create_model(
        card.preset, pretrained=card.dataset, key=jax.random.key(0)
    )
    assert model.config() == card.config
    assert list(model.input_shape) == list(card.input_shape)
    params = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    assert sum(int(p.size) for p in params) == card.parameter_count
    assert all(p.dtype == np.float32 for p in params)
    test = load_dataset(card.dataset, "test")
    assert len(test) == card.test_count == 10_000
    assert list(test.class_names) == list(card.classes)
    result = evaluate(model, state, test)
    correct = round(result["accuracy"] * result["count"])
    # Exactly the card's count, but for test images on a near tie that
    # another CPU may round the other way (the card says how many).
    assert abs(correct - card.test_correct) <= card.correct_tolerance, (
        f"{card.file}: {correct} correct, the card says {card.test_correct} "
        f"± {card.correct_tolerance}"
    )
    assert card.test_accuracy == card.test_correct / card.test_count
    assert card.command.startswith("python examples/mnist.py --model ")


def test_the_docs_show_every_card():
    page = (PACKAGE_WEIGHTS.parent.parent / "docs" / "pretrained.md").read_text()
    for card in map(_card, SHIPPED):
        row = (
            f"| `{card.preset}` | {card.dataset} | {100 * card.test_accuracy:.2f} % "
            f"({card.test_correct:,}) | {card.correct_tolerance} |"
        )
        assert row in page, f"docs/pretrained.md lacks the row of {card.file}"


def test_cards_round_trip_through_json():
    card = zoo.model_card("mlp", "mnist")
    assert isinstance(card, ModelCard)
    assert ModelCard.from_json(json.loads(json.dumps(card.to_json()))) == card
    with pytest.raises(ValueError, match=r"missing fields \['command'"):
        ModelCard.from_json({k: v for k, v in card.to_json().items() if k != "command"})


def test_list_models_filters_by_wildcard_and_weights():
    assert zoo.list_models("resnet*") == [
        "resnet8", "resnet20", "resnet18", "resnet34", "resnet50"
    ]  # fmt: skip
    assert zoo.list_models("*mlp") == ["mlp", "toy_mlp"]
    assert zoo.list_models("nothing*") == []
    pretrained = zoo.list_models(pretrained=True)
    assert {"mlp", "stax_cnn", "lenet5"} <= set(pretrained)
    assert "toy_mlp" not in pretrained
    assert zoo.list_models("stax*", pretrained=True) == ["stax_cnn"]


def test_unknown_dataset_names_those_with_weights():
    with pytest.raises(ValueError, match="cifar10") as error:
        zoo.create_model("mlp", pretrained="cifar10", key=jax.random.key(0))
    assert "['fashion_mnist', 'mnist']" in str(error.value)
    with pytest.raises(KeyError, match="Did you mean 'mlp'"):
        zoo.model_card("mpl", "mnist")


def test_a_new_head_keeps_the_backbone():
    trained, _ = zoo.create_model("stax_cnn", pretrained="mnist", key=jax.random.key(0))
    model, state = zoo.create_model(
        "stax_cnn", pretrained="mnist", out_size=3, key=jax.random.key(1)
    )
    assert model.out_size == 3
    old = named_arrays(trained, state)
    new = named_arrays(model, state)
    for name, array in new.items():
        if name.startswith("output."):
            assert array.shape[0] == 3
        else:
            assert np.asarray(array).tobytes() == np.asarray(old[name]).tobytes()
    again, _ = zoo.create_model(
        "stax_cnn", pretrained="mnist", out_size=3, key=jax.random.key(1)
    )
    assert eqx.tree_equal(again, model)  # the head is drawn from the key


def test_overrides_that_keep_shapes_keep_every_weight():
    trained, state = zoo.create_model("mlp", pretrained="mnist", key=jax.random.key(0))
    model, _ = zoo.create_model(
        "mlp", pretrained="mnist", dropout=0.5, key=jax.random.key(1)
    )
    assert model.config()["dropout"] == 0.5
    for name, array in named_arrays(trained, state).items():
        assert np.array_equal(array, named_arrays(model, state)[name]), name


def test_overrides_that_change_the_backbone_are_refused():
    with pytest.raises(ValueError, match=r"'layers\[0\]\.weight'.*\(256, 784\)"):
        zoo.create_model(
            "mlp", pretrained="mnist", width_size=[256, 512], key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="only the head may change"):
        zoo.create_model(
            "mlp", pretrained="mnist", width_size=[512], key=jax.random.key(0)
        )


def _publish(
    folder: pathlib.Path, preset: str = "toy_mlp", dataset: str = "toy", seed: int = 7
) -> ModelCard:
    """A weight file and card of a fresh ``preset`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model, state = zoo.create_model(preset, key=jax.random.key(seed))
    path = zoo.save_safetensors(
        folder / f"{preset}-{dataset}.safetensors", model, state
    )
    card = dataclasses.replace(
        zoo.model_card("mlp", "mnist"),
        preset=preset, dataset=dataset, file=path.name, sha256=sha256_file(path),
        config=model.config(), input_shape=model.input_shape,
    )  # fmt: skip
    (folder / f"{preset}-{dataset}.json").write_text(json.dumps(card.to_json()))
    return card


def test_zoo_weights_dir_comes_first(monkeypatch, tmp_path: pathlib.Path):
    mine = tmp_path / "mine"
    _publish(mine, "toy_mlp", "toy")
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(mine))
    assert ("toy_mlp", "toy") in zoo.models._pretrained.available_weights()
    assert "toy_mlp" in zoo.list_models(pretrained=True)
    model, _ = zoo.create_model("toy_mlp", pretrained="toy", key=jax.random.key(0))
    fresh, _ = zoo.create_model("toy_mlp", key=jax.random.key(7))
    assert eqx.tree_equal(model, fresh)
    # A card there shadows the package's.
    card = _publish(mine, "mlp", "mnist")
    assert zoo.model_card("mlp", "mnist") == card


def test_a_file_unlike_its_card_is_refused(monkeypatch, tmp_path: pathlib.Path):
    mine = tmp_path / "mine"
    card = _publish(mine)
    weights = mine / card.file
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(mine))
    with pytest.raises(ValueError, match="SHA-256 mismatch") as error:
        zoo.create_model("toy_mlp", pretrained="toy", key=jax.random.key(0))
    assert card.sha256 in str(error.value)
    assert weights.read_bytes() == bytes(data)  # refused, never deleted


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[FileServer]:
    """A local HTTP server over a folder holding toy_mlp-toy's file and card."""
    _publish(tmp_path / "served")
    with serve(tmp_path / "served") as httpd:
        yield httpd


def _url(httpd: FileServer, mode: str) -> str:
    host, port = httpd.server_address[:2]
    return f"http://{host!s}:{port}/{mode}/"


def _weights_url(monkeypatch: pytest.MonkeyPatch, httpd: FileServer, mode: str):
    """Point ZOO_WEIGHTS_URL at the local server, allowing its plain http."""
    monkeypatch.setenv("ZOO_WEIGHTS_URL", _url(httpd, mode))
    monkeypatch.setenv("ZOO_WEIGHTS_ALLOW_HTTP", "1")


def test_weights_download_verified_into_the_cache(
    monkeypatch, server: FileServer, tmp_path: pathlib.Path
):
    _weights_url(monkeypatch, server, "good")
    model, _ = zoo.create_model("toy_mlp", pretrained="toy", key=jax.random.key(0))
    fresh, _ = zoo.create_model("toy_mlp", key=jax.random.key(7))
    assert eqx.tree_equal(model, fresh)
    assert server.requests == [
        "/good/toy_mlp-toy.json",
        "/good/toy_mlp-toy.safetensors",
    ]
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.iterdir()) == [
        "toy_mlp-toy.json",
        "toy_mlp-toy.safetensors",
    ]
    zoo.create_model("toy_mlp", pretrained="toy", key=jax.random.key(0))
    assert len(server.requests) == 2  # the cache answers the second time


def test_a_corrupt_download_is_refused_and_not_kept(
    monkeypatch, server: FileServer, tmp_path: pathlib.Path
):
    _weights_url(monkeypatch, server, "corrupt")
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        zoo.create_model("toy_mlp", pretrained="toy", key=jax.random.key(0))
    assert _listing(tmp_path / "cache") == []  # not even the card


def test_a_missing_remote_card_says_where_it_looked(monkeypatch, server: FileServer):
    _weights_url(monkeypatch, server, "good")
    with pytest.raises(ValueError, match="HTTP 404"):
        zoo.model_card("toy_mlp", "nothing")


# --------------------------------------------------------------------------
# A weights server is not trusted: malicious cards and bodies, all refused
# before a byte is written, leaving nothing behind.


def _serve_card(folder: pathlib.Path, **changes: object) -> None:
    """Rewrite the served card of toy_mlp-toy with ``changes``."""
    path = folder / "toy_mlp-toy.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"file": "ESCAPE"}, r"its file '/.*/escaped\.pth' must be exactly"),
        ({"file": "../../escaped.pth"}, r"its file '\.\./\.\./escaped\.pth' must be"),
        ({"file": "toy_mlp-toy.safetensors/"}, "must be exactly"),
        ({"file": None}, "field 'file' must be a string, got None"),
        ({"sha256": 12}, "field 'sha256' must be a string, got 12"),
        ({"sha256": "ab" * 31}, "is not 64 lowercase hex digits"),
        ({"input_shape": "2"}, "field 'input_shape' must be a list of ints"),
        ({"config": ["MLP"]}, "field 'config' must be an object"),
        ({"preset": "toy_mlp/../x"}, "preset 'toy_mlp/../x' is not a plain name"),
        (
            {"dataset": "other", "file": "toy_mlp-other.safetensors"},
            "is the card of 'toy_mlp' on 'other'",
        ),
    ],
)
def test_a_malicious_card_is_refused_before_anything_is_written(
    monkeypatch, server: FileServer, tmp_path: pathlib.Path, changes, message
):
    escaped = tmp_path / "site-packages" / "escaped.pth"
    escaped.parent.mkdir()
    if changes.get("file") == "ESCAPE":
        changes = {"file": str(escaped)}  # an absolute path
    _serve_card(tmp_path / "served", **changes)
    _weights_url(monkeypatch, server, "good")
    with pytest.raises(ValueError, match=message):
        zoo.create_model("toy_mlp", pretrained="toy", key=jax.random.key(0))
    with pytest.raises(ValueError, match=message):
        zoo.model_card("toy_mlp", "toy")
    assert server.requests == ["/good/toy_mlp-toy.json"] * 2  # never the file
    assert _listing(tmp_path / "cache") == []
    assert _listing(escaped.parent) == []


@pytest.mark.parametrize("entry", ["toy_mlp-toy.json", "toy_mlp-toy.safetensors"])
def test_a_link_in_the_cache_is_refused(
    monkeypatch, server: FileServer, tmp_path: pathlib.Path, entry: str
):
    outside = tmp_path / "outside"
    outside.write_bytes(b"not to be touched")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / entry).symlink_to(outside)
    _weights_url(monkeypatch, server, "good")
    with pytest.raises(ValueError, match=r"is a symbolic link .*follows no links"):
        zoo.create_model("toy_mlp", pretrained="toy", key=jax.random.key(0))
    assert outside.read_bytes() == b"not to be touched"
    assert _listing(cache) == [entry]  # the link, left as it was; nothing else
    assert ("toy_mlp", "toy") not in zoo.models._pretrained.available_weights()


def test_a_body_larger_than_its_config_needs_is_refused(
    monkeypatch, server: FileServer, tmp_path: pathlib.Path
):
    # A card whose SHA-256 matches a 1 MiB body: toy_mlp's 52 floats (and a
    # header) need far less, so the download stops there and nothing stays.
    served = tmp_path / "served"
    big = served / "toy_mlp-toy.safetensors"
    big.write_bytes(bytes(1 << 20))
    _serve_card(served, sha256=sha256_file(big))
    for mode in ("good", "nolength"):  # with and without a Content-Length
        _weights_url(monkeypatch, server, mode)
        with pytest.raises(ValueError, match=r"than the [\d,]+ (bytes )?expected"):
            zoo.create_model("toy_mlp", pretrained="toy", key=jax.random.key(0))
        assert _listing(tmp_path / "cache") == []


def test_plain_http_needs_an_explicit_opt_in(monkeypatch, server: FileServer):
    monkeypatch.setenv("ZOO_WEIGHTS_URL", _url(server, "good"))
    with pytest.raises(ValueError, match=r"plain http .*ZOO_WEIGHTS_ALLOW_HTTP=1"):
        zoo.model_card("toy_mlp", "toy")
    assert server.requests == []  # refused before connecting
    with pytest.raises(ValueError, match="must be an https://"):
        monkeypatch.setenv("ZOO_WEIGHTS_URL", "ftp://example.com/weights/")
        zoo.model_card("toy_mlp", "toy")
    monkeypatch.setenv("ZOO_WEIGHTS_URL", _url(server, "good"))
    card, path = zoo.models._pretrained.weights_file("toy_mlp", "toy", allow_http=True)
    assert path.read_bytes() == (server.root / card.file).read_bytes()


def test_a_local_file_url_needs_no_opt_in(monkeypatch, tmp_path: pathlib.Path):
    _publish(tmp_path / "served")
    monkeypatch.setenv("ZOO_WEIGHTS_URL", (tmp_path / "served").as_uri())
    model, _ = zoo.create_model("toy_mlp", pretrained="toy", key=jax.random.key(0))
    assert model.config()["width_size"] == [10]


def test_shipped_names_are_checked_against_the_installed_cards(
    monkeypatch, server: FileServer, tmp_path: pathlib.Path
):
    # An installed card whose weight file is not installed: the file comes
    # from ZOO_WEIGHTS_URL, checked against the installed card's SHA-256, not
    # against the server's card (which the server may change with the file).
    installed = tmp_path / "installed"
    installed.mkdir()
    shutil.copy(tmp_path / "served" / "toy_mlp-toy.json", installed)
    good = (tmp_path / "served" / "toy_mlp-toy.safetensors").read_bytes()
    _publish(tmp_path / "served", "toy_mlp", "toy", seed=8)  # other weights
    monkeypatch.setattr(_cards, "PACKAGE_WEIGHTS", installed)
    _weights_url(monkeypatch, server, "good")
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        zoo.create_model("toy_mlp", pretrained="toy", key=jax.random.key(0))
    assert server.requests == ["/good/toy_mlp-toy.safetensors"]  # no card asked
    assert _listing(tmp_path / "cache") == []
    (tmp_path / "served" / "toy_mlp-toy.safetensors").write_bytes(good)
    model, _ = zoo.create_model("toy_mlp", pretrained="toy", key=jax.random.key(0))
    fresh, _ = zoo.create_model("toy_mlp", key=jax.random.key(7))
    assert eqx.tree_equal(model, fresh)
    assert _listing(tmp_path / "cache") == ["toy_mlp-toy.safetensors"]


def test_a_card_unlike_its_file_is_refused(monkeypatch, tmp_path: pathlib.Path):
    mine = tmp_path / "mine"
    _publish(mine)
    _serve_card(mine, config={"family": "MLP", "in_size": 2, "out_size": 2})
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(mine))
    with pytest.raises(ValueError, match="but its card describes"):
        zoo.create_model("toy_mlp", pretrained="toy", key=jax.random.key(0))


def test_overrides_are_checked_before_the_model_is_built():
    with pytest.raises(ValueError, match=r"\(40000, 784\)"):
        zoo.create_model(
            "mlp", pretrained="mnist", width_size=[40000, 512], key=jax.random.key(0)
        )
