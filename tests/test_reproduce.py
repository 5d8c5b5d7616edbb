"""Cards reproduce: examples/reproduce.py re-makes a card and compares it.

The end-to-end test re-runs the ``mlp-mnist`` card's own command (about 15-30 s
on 2 cores), publishes it and requires the shipped file's SHA-256; the rest
check the verdicts and the cards' provenance without training.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import types

import pytest

import zoo
from tests import helpers

REPO = pathlib.Path(__file__).resolve().parent.parent
WEIGHTS = REPO / "zoo" / "weights"
PROVENANCE_KEYS = {"zoo_commit", "jax", "jaxlib", "cpu", "cpu_flags"}


@pytest.fixture(scope="module")
def reproduce() -> types.ModuleType:
    sys.path.insert(0, str(REPO / "examples"))  # it imports publish_weights
    try:
        return helpers.load_example("reproduce.py")
    finally:
        sys.path.remove(str(REPO / "examples"))


def _card(name: str) -> zoo.models.ModelCard:
    data = json.loads((WEIGHTS / f"{name}.json").read_text(encoding="utf-8"))
    return zoo.models.ModelCard.from_json(data)


HERE = {
    "zoo_commit": "abc",
    "jax": "0.10.2",
    "jaxlib": "0.10.2",
    "cpu": "Some CPU",
    "cpu_flags": "0123456789ab",
}


def test_the_quick_cards_record_what_made_them(reproduce):
    for name in reproduce.QUICK:
        card = _card(name)
        assert set(card.provenance) >= PROVENANCE_KEYS, name
        assert card.provenance["jax"] and card.provenance["cpu_flags"], name


def test_an_equal_file_is_equal_anywhere(reproduce):
    shipped = dataclasses.replace(_card("mlp-mnist"), provenance=HERE)
    elsewhere = {**HERE, "cpu": "Another CPU", "cpu_flags": "ffffffffffff"}
    made = dataclasses.replace(shipped, provenance=elsewhere)
    outcome = reproduce.compare(shipped, made, elsewhere, 12.0)
    assert outcome.verdict == "equal" and not outcome.failed
    assert outcome.line.startswith("mlp-mnist: equal")


def test_another_file_on_the_cards_cpu_is_a_stale_card(reproduce):
    shipped = dataclasses.replace(_card("mlp-mnist"), provenance=HERE)
    here = {**HERE, "jax": "0.11.0"}
    made = dataclasses.replace(
        shipped, sha256="f" * 64, test_correct=shipped.test_correct + 3
    )
    outcome = reproduce.compare(shipped, made, here, 12.0)
    assert outcome.failed
    # Which card, both figures, and why: what differs from the card's provenance.
    assert outcome.line.startswith("mlp-mnist: FAILED")
    assert f"{made.test_correct} correct against the card's" in outcome.line
    assert f"{shipped.test_correct} ± {shipped.correct_tolerance}" in outcome.line
    assert "jax 0.10.2 here 0.11.0" in outcome.line and "stale" in outcome.line


def test_another_cpu_compares_the_count_within_the_tolerance(reproduce):
    shipped = dataclasses.replace(
        _card("mlp-mnist"), provenance=HERE, correct_tolerance=2
    )
    here = {**HERE, "cpu_flags": "ffffffffffff"}
    # Beyond the card's tolerance, up to half a percent of the test set (50 of
    # 10,000) is a recipe that still learns on another kind of CPU.
    for delta, verdict in [(0, "within tolerance"), (-2, "within tolerance"),
                           (3, "within tolerance"), (-50, "within tolerance"),
                           (51, "FAILED")]:  # fmt: skip
        made = dataclasses.replace(
            shipped, sha256="f" * 64, test_correct=shipped.test_correct + delta
        )
        outcome = reproduce.compare(shipped, made, here, 12.0)
        assert outcome.verdict == verdict, outcome.line
        assert "on another CPU" in outcome.line
    # A card without provenance (made before 0.3.0) is of no known kind.
    old = dataclasses.replace(shipped, provenance={})
    outcome = reproduce.compare(old, made, HERE, 12.0)
    assert "records no CPU flags" in outcome.line


def test_the_command_is_rerun_into_the_folder_given(reproduce, tmp_path):
    command = _card("mlp-mnist").command
    args = reproduce.rerun_args(command, tmp_path / "run", "/data")
    assert "runs/mlp-mnist" not in args
    assert args[-5:] == ["--out", str(tmp_path / "run"), "--no-progress",
                         "--data-dir", "/data"]  # fmt: skip
    assert args[:2] == ["--model", "mlp"]
    with pytest.raises(ValueError, match=r"not python examples/mnist\.py"):
        reproduce.rerun_args("rm -rf /", tmp_path, None)


def test_a_distilled_runs_command_names_its_teacher_and_no_other_does(reproduce):
    publish = reproduce.publish_weights
    run = pathlib.Path("runs/x")
    plain = {"model": "mlp", "dataset": "mnist", "epochs": 2, "teacher": None,
             "distill_temperature": 4.0, "distill_weight": 0.9}  # fmt: skip
    assert "--teacher" not in publish.command_of(plain, run)
    assert "distill" not in publish.command_of(plain, run)
    assert publish.teacher_note(plain) == ""
    taught = {**plain, "teacher": "cnn", "distill_temperature": 2.0}
    command = publish.command_of(taught, run)
    assert "--teacher cnn --distill-temperature 2 --distill-weight 0.9" in command
    note = publish.teacher_note(taught)
    assert "Distilled from the shipped cnn mnist weights" in note
    assert _card("cnn-mnist").sha256[:16] in note


def test_cards_without_provenance_still_load_and_bad_ones_are_refused():
    data = _card("mlp-mnist").to_json()
    old = {k: v for k, v in data.items() if k != "provenance"}
    assert zoo.models.ModelCard.from_json(old).provenance == {}
    for bad in [["jax"], {"jax": 0.1}, {"../x": "y"}, {"jax": "x" * 300}]:
        with pytest.raises(ValueError, match="field 'provenance' must be"):
            zoo.models.ModelCard.from_json({**data, "provenance": bad})


@pytest.mark.slow
@pytest.mark.skipif(
    "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""),
    reason="retrains without XLA_FLAGS: once, in the one-device session, is enough",
)
def test_the_mlp_mnist_card_reproduces_bit_for_bit(reproduce, tmp_path):
    card = _card("mlp-mnist")
    here = {"cpu": reproduce.publish_weights.cpu_model(),
            "cpu_flags": reproduce.publish_weights.cpu_flags_hash()}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "examples/reproduce.py", "mlp-mnist",
         "--keep", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    if all(card.provenance.get(k) == v for k, v in here.items()):
        assert "mlp-mnist: equal (SHA-256 equal" in done.stdout, done.stdout
    else:  # another kind of CPU than the card's: the count within its tolerance
        assert "mlp-mnist: " in done.stdout and "FAILED" not in done.stdout
    made = _card_at(tmp_path / "mlp-mnist" / "weights" / "mlp-mnist.json")
    assert set(made.provenance) >= PROVENANCE_KEYS


def _card_at(path: pathlib.Path) -> zoo.models.ModelCard:
    return zoo.models.ModelCard.from_json(json.loads(path.read_text(encoding="utf-8")))
