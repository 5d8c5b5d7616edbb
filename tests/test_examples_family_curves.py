"""examples/family_curves.py: one accuracy figure per family of shipped weights."""

import json

import pytest

import zoo
from tests import helpers

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def example():
    return helpers.load_example("family_curves.py")


def test_histories_merge_epoch_by_epoch(example):
    a = [{"epoch": 0, "a_accuracy": 0.5}, {"epoch": 1, "a_accuracy": 0.6}]
    b = [{"epoch": 0, "b_accuracy": 0.7}]
    assert example.merged([a, b]) == [
        {"epoch": 0, "a_accuracy": 0.5, "b_accuracy": 0.7},
        {"epoch": 1, "a_accuracy": 0.6},
    ]


def test_each_card_names_its_run(example):
    card = zoo.model_card("mlp", "mnist")
    assert example.run_dir(card) == example.REPO / "runs" / "mlp-mnist"


def test_one_figure_per_family_from_the_runs_of_the_cards(
    example, tmp_path, monkeypatch
):
    runs = tmp_path / "runs"
    monkeypatch.setattr(
        example, "run_dir", lambda card: runs / f"{card.preset}-{card.dataset}"
    )
    families = set()
    for name in zoo.list_models(pretrained=True):
        for dataset in ("mnist", "fashion_mnist"):
            card = example._card_or_none(name, dataset)
            if card is None:
                continue
            families.add(card.config["family"].lower())
            run = runs / f"{name}-{dataset}"
            run.mkdir(parents=True)
            epochs = [{"epoch": e, "test_accuracy": 0.9 + e / 100} for e in range(3)]
            (run / "metrics.json").write_text(json.dumps({"epochs": epochs}))
    written = example.main(["--out", str(tmp_path / "img")])
    assert {path.name for path in written} == {f"{f}_curves.png" for f in families}
    assert {"mlp", "cnn"} <= families
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # One family alone: only its figure, and only its runs are read.
    only = example.main(["--out", str(tmp_path / "one"), "--family", "ViT"])
    assert [path.name for path in only] == ["vit_curves.png"]
    with pytest.raises(SystemExit, match="no shipped weights of a family named"):
        example.main(["--out", str(tmp_path / "none"), "--family", "Nope"])


def test_a_missing_run_names_the_command_that_makes_it(example, tmp_path, monkeypatch):
    monkeypatch.setattr(example, "run_dir", lambda card: tmp_path / "absent")
    with pytest.raises(SystemExit) as info:
        example.main(["--out", str(tmp_path / "img")])
    message = str(info.value.code)
    assert "metrics.json is missing" in message
    assert "python examples/mnist.py --model " in message
