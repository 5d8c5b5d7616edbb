"""A ``~`` in a path a user gives zoo means their home, as in a shell."""

import pathlib

import jax
import numpy as np
import optax
import pytest

import zoo


def test_a_tilde_means_home_in_every_path_zoo_writes_or_reads(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    home, elsewhere = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(elsewhere)
    model, state = zoo.create_model(
        "mlp", in_size=2, out_size=2, width_size=[4], key=jax.random.key(0)
    )
    x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)

    result = zoo.fit(
        model, state, (x, y), optax.sgd(0.1), epochs=1, batch_size=32,
        checkpoint_dir="~/runs/a", callbacks=[zoo.train.CSVLogger("~/log.csv")],
    )  # fmt: skip
    assert (home / "log.csv").is_file()
    assert zoo.train.latest_checkpoint("~/runs/a") is not None
    again, _ = zoo.load_model("~/runs/a")
    assert again.config() == result.model.config()
    zoo.save_checkpoint("~/runs/b", result.train_state)
    assert (
        zoo.load_checkpoint("~/runs/b", like=result.train_state).train_state.step == 2
    )

    zoo.save_safetensors("~/mlp.safetensors", result.model, state)
    loaded, _ = zoo.load_safetensors("~/mlp.safetensors")
    assert loaded.config() == result.model.config()
    zoo.export(result.model, result.state, "~/mlp.jax")
    assert (home / "mlp.jax").is_file()

    assert sorted(p.name for p in home.iterdir()) == [
        "log.csv", "mlp.jax", "mlp.safetensors", "runs"
    ]  # fmt: skip
    assert list(elsewhere.iterdir()) == []  # no folder named "~"
