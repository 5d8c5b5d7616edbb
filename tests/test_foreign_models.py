"""Any Equinox model trains with ``fit``: models zoo did not build.

A plain ``eqx.Module`` called on ONE example, as ``model(x, *, key=None) ->
logits`` (``state=None``) or ``model(x, state, *, key=None) -> (logits,
state)`` (the ``eqx.nn.State`` of ``eqx.nn.make_with_state``), trains with
``zoo.fit`` on real MNIST, evaluates, predicts, and checkpoints: resumed
bitwise through ``fit``'s ``checkpoint_dir``, loaded back with ``like=``. A
model of another call form is refused before any step with a message naming
both forms. A model class of one's own registered as a family is built by
``create_model`` and rebuilt by ``zoo.load_model`` from its config alone.
"""

import pathlib
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, strategies as st
from jaxtyping import Array, Float, PRNGKeyArray

import zoo
from zoo.data import ArrayDataset

CHANCE = 0.1


def _flat(data: ArrayDataset) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` with each image as 784 ``uint8`` values, for ``eqx.nn.MLP``."""
    return data.inputs.reshape(len(data), 28 * 28), data.labels


def _mlp(seed: int = 0) -> eqx.nn.MLP:
    return eqx.nn.MLP(784, 10, 64, 2, key=jax.random.key(seed))


class SmallCNN(eqx.Module):
    """Conv 3x3 stride 2 -> BatchNorm -> ReLU -> dense, on ONE (1, 28, 28) image."""

    conv: eqx.nn.Conv2d
    norm: eqx.nn.BatchNorm
    output: eqx.nn.Linear

    def __init__(self, *, key: PRNGKeyArray, axis_name: str = zoo.models.BATCH_AXIS):
        conv_key, output_key = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(1, 8, 3, stride=2, key=conv_key)
        self.norm = eqx.nn.BatchNorm(8, axis_name=axis_name, mode="ema")
        self.output = eqx.nn.Linear(8 * 13 * 13, 10, key=output_key)

    def __call__(
        self,
        x: Float[Array, "1 28 28"],
        state: eqx.nn.State,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, " 10"], eqx.nn.State]:
        del key
        x, state = self.norm(self.conv(x), state)
        return self.output(jax.nn.relu(x).ravel()), state


def _cnn(seed: int = 0) -> tuple[SmallCNN, eqx.nn.State]:
    return eqx.nn.make_with_state(SmallCNN)(key=jax.random.key(seed))


def _arrays_equal(a: Any, b: Any) -> bool:
    leaves_a = jax.tree.leaves(eqx.filter(a, eqx.is_array))
    leaves_b = jax.tree.leaves(eqx.filter(b, eqx.is_array))
    return len(leaves_a) == len(leaves_b) and all(
        bool(jnp.array_equal(x, y)) for x, y in zip(leaves_a, leaves_b, strict=True)
    )


def test_equinox_mlp_trains_evaluates_and_predicts(small_train, small_test):
    train, test = _flat(small_train), _flat(small_test)
    result = zoo.fit(
        _mlp(), None, train, optax.adam(3e-3), epochs=1, batch_size=32,
        test_data=test, callbacks=[],
    )  # fmt: skip
    assert isinstance(result.model, eqx.nn.MLP) and result.state is None
    accuracy = result.history[-1].test_accuracy
    assert accuracy is not None and accuracy > 5 * CHANCE
    evaluated = zoo.evaluate(result.model, None, test)
    assert evaluated["accuracy"] == accuracy and evaluated["count"] == len(test[1])
    predicted = zoo.predict(result.model, None, jnp.asarray(test[0][:100]))
    logits, state = zoo.apply(result.model, test[0][:100])
    assert state is None and logits.shape == (100, 10)
    assert jnp.array_equal(predicted, jnp.argmax(logits, axis=-1))


def test_stateful_equinox_cnn_trains_and_evaluates(small_train, small_test):
    model, state = _cnn()
    result = zoo.fit(  # 4 steps per call: quick to compile
        model, state, small_train.take(512), optax.adam(3e-3), epochs=1,
        batch_size=32, steps_per_call=4, test_data=small_test, callbacks=[],
    )  # fmt: skip
    assert isinstance(result.model, SmallCNN)
    assert not _arrays_equal(result.state, state)  # running statistics moved
    accuracy = result.history[-1].test_accuracy
    assert accuracy is not None and accuracy > 5 * CHANCE
    assert zoo.evaluate(result.model, result.state, small_test)["accuracy"] == accuracy


@pytest.mark.parametrize("stateful", [False, True], ids=["mlp", "cnn"])
def test_fit_resumes_a_foreign_model_bitwise(
    stateful: bool, small_train: ArrayDataset, tmp_path: pathlib.Path
):
    """Two epochs straight, and one epoch then a resumed second, end equal."""
    model, state = _cnn() if stateful else (_mlp(), None)
    data = small_train.take(256) if stateful else _flat(small_train.take(256))

    def run(epochs: int, **kwargs: Any) -> zoo.FitResult:
        return zoo.fit(
            model, state, data, optax.adam(1e-3), epochs=epochs, batch_size=64,
            steps_per_call=2, callbacks=[], **kwargs,
        )  # fmt: skip

    straight = run(2)
    run(1, checkpoint_dir=tmp_path)
    resumed = run(2, checkpoint_dir=tmp_path, resume=True)
    assert int(resumed.train_state.step) == int(straight.train_state.step) == 8
    assert _arrays_equal(resumed.model, straight.model)
    assert _arrays_equal(resumed.state, straight.state)

    like = (_cnn(seed=1) if stateful else _mlp(seed=1),)[0]
    loaded, loaded_state = zoo.load_model(tmp_path, like=like)
    assert _arrays_equal(loaded, straight.model)
    assert _arrays_equal(loaded_state, straight.state)


def test_save_and_load_checkpoint_of_a_foreign_model(tmp_path: pathlib.Path):
    model, state = _cnn()
    ts = zoo.train.TrainState.init(model, state, optax.sgd(0.1), key=jax.random.key(1))
    zoo.save_checkpoint(tmp_path, ts, metadata={"note": "mine"})
    like = zoo.train.TrainState.init(
        *_cnn(seed=2), optax.sgd(0.1), key=jax.random.key(3)
    )
    ckpt = zoo.load_checkpoint(tmp_path, like=like)
    assert _arrays_equal(ckpt.train_state, ts) and ckpt.metadata == {"note": "mine"}


def test_a_foreign_checkpoint_without_like_says_to_pass_one(tmp_path: pathlib.Path):
    ts = zoo.train.TrainState.init(_mlp(), None, None, key=jax.random.key(0))
    zoo.save_checkpoint(tmp_path, ts)
    with pytest.raises(zoo.CheckpointError, match=r"like=model.*MLP|MLP.*like=model"):
        zoo.load_model(tmp_path)
    with pytest.raises(zoo.CheckpointError, match="like"):
        zoo.load_checkpoint(tmp_path)
    # Another class, or a zoo model, is refused by name before any array is read.
    with pytest.raises(zoo.CheckpointError, match=r"class MLP.*not for a model of"):
        zoo.load_model(tmp_path, like=_cnn())
    zoo_mlp, _ = zoo.create_model("mlp", key=jax.random.key(0))
    with pytest.raises(zoo.CheckpointError, match="not for a zoo MLP model"):
        zoo.load_model(tmp_path, like=zoo_mlp)


class _ReturnsDict(eqx.Module):
    linear: eqx.nn.Linear

    def __call__(self, x: Array, *, key: Any = None) -> dict[str, Array]:
        return {"logits": self.linear(x)}


class _ReturnsMatrix(eqx.Module):
    linear: eqx.nn.Linear

    def __call__(self, x: Array, *, key: Any = None) -> Array:
        return self.linear(x)[:, None]


class _NoKey(eqx.Module):
    linear: eqx.nn.Linear

    def __call__(self, x: Array) -> Array:
        return self.linear(x)


def test_a_model_of_another_call_form_is_refused_naming_both(small_train):
    x, y = _flat(small_train.take(128))
    linear = eqx.nn.Linear(784, 10, key=jax.random.key(0))
    cnn, cnn_state = _cnn()
    both = r"model\(x, \*, key=None\) -> logits.*model\(x, state, \*, key=None\)"
    cases = [
        (_mlp(), eqx.nn.State(_mlp()), (x, y), TypeError, "pass state=None"),
        (cnn, None, small_train.take(128), TypeError, "make_with_state"),
        (_ReturnsDict(linear), None, (x, y), TypeError, "returned a dict"),
        (_ReturnsMatrix(linear), None, (x, y), ValueError, r"shape \(10, 1\)"),
        (_NoKey(linear), None, (x, y), TypeError, "key"),
        (_mlp(), 3, (x, y), TypeError, "None or an eqx.nn.State, got int"),
        (cnn, (cnn_state,), small_train.take(128), TypeError, "got tuple"),
    ]
    for model, state, data, error, detail in cases:
        with pytest.raises(error, match=both) as raised:
            zoo.fit(model, state, data, optax.sgd(0.1), epochs=1)
        assert raised.match(detail)
        with pytest.raises(error, match=both) as raised:
            zoo.evaluate(model, state, data)
        assert raised.match(detail)


def test_batch_norm_on_another_axis_is_refused_with_the_fix(small_train):
    model, state = eqx.nn.make_with_state(SmallCNN)(
        key=jax.random.key(0), axis_name="examples"
    )
    with pytest.raises(ValueError, match=r"\.norm.*axis_name=zoo.models.BATCH_AXIS"):
        zoo.fit(model, state, small_train.take(128), optax.sgd(0.1), epochs=1)


def test_a_foreign_models_input_shape_is_the_datas(small_train):
    """No ``input_shape`` needed; ``uint8`` is still scaled, others refused."""
    x, _ = _flat(small_train.take(8))
    mlp = _mlp()
    scaled = zoo.apply(mlp, x)[0]
    assert jnp.allclose(scaled, jax.vmap(mlp)(jnp.asarray(x, jnp.float32) / 255))
    with pytest.raises(TypeError, match="astype"):
        zoo.apply(mlp, x.astype(np.int32))


@given(seed=st.integers(0, 2**16), batch=st.integers(1, 5))
def test_apply_on_a_foreign_model_is_its_vmap(seed: int, batch: int):
    key = jax.random.key(seed)
    mlp = eqx.nn.MLP(6, 3, 4, 1, key=key)
    x = jax.random.normal(jax.random.fold_in(key, 1), (batch, 6))
    assert jnp.allclose(zoo.apply(mlp, x)[0], jax.vmap(mlp)(x), atol=1e-6)


def test_apply_on_a_stateful_foreign_model_is_its_vmap():
    model, state = _cnn()
    images = jax.random.uniform(jax.random.key(1), (3, 1, 28, 28))
    logits, new_state = zoo.apply(model, images, state)  # training mode
    expected, expected_state = jax.vmap(
        model, in_axes=(0, None), out_axes=(0, None), axis_name="batch"
    )(images, state)
    assert jnp.allclose(logits, expected, atol=1e-5)
    assert _arrays_equal(new_state, expected_state)


class TinyNet(zoo.AbstractModel):
    """A family of one's own: ONE (1, 28, 28) image -> hidden ReLU -> logits."""

    hidden: eqx.nn.Linear
    output: eqx.nn.Linear
    width: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    stateful: ClassVar[bool] = False

    def __init__(self, width: int, out_size: int, *, key: PRNGKeyArray):
        hidden_key, output_key = jax.random.split(key)
        self.hidden = eqx.nn.Linear(28 * 28, width, key=hidden_key)
        self.output = eqx.nn.Linear(width, out_size, key=output_key)
        self.width, self.out_size = width, out_size

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, 28, 28)

    def config(self) -> dict[str, Any]:
        return {"family": "TinyNet", "width": self.width, "out_size": self.out_size}

    def __call__(
        self, x: Float[Array, "1 28 28"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " classes"]:
        del key
        return self.output(jax.nn.relu(self.hidden(x.ravel())))


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch):
    """The registry's families and presets, restored after the test."""
    registry = zoo.models._registry
    monkeypatch.setattr(registry, "FAMILIES", dict(registry.FAMILIES))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.mark.usefixtures("registry")
def test_a_registered_family_trains_and_reloads_from_its_config(
    small_train: ArrayDataset, tmp_path: pathlib.Path
):
    assert zoo.models.register_family(TinyNet) == "TinyNet"
    assert zoo.models.register_family(TinyNet) == "TinyNet"  # again: nothing changes
    zoo.register_model(
        "tiny_net", {"family": "TinyNet", "width": 16, "out_size": 10}, "A test."
    )
    assert "tiny_net" in zoo.list_models()
    model, state = zoo.create_model("tiny_net", key=jax.random.key(0))
    assert isinstance(model, TinyNet) and model.width == 16
    result = zoo.fit(
        model, state, small_train.take(128), optax.adam(1e-3), epochs=1,
        batch_size=64, checkpoint_dir=tmp_path, callbacks=[],
    )  # fmt: skip
    assert int(result.train_state.step) == 2
    loaded, loaded_state = zoo.load_model(tmp_path)  # from config.json alone
    assert isinstance(loaded, TinyNet)
    assert _arrays_equal((loaded, loaded_state), (result.model, result.state))


@pytest.mark.usefixtures("registry")
def test_register_family_refuses_what_it_cannot_build():
    with pytest.raises(TypeError, match=r"subclass of zoo\.AbstractModel"):
        zoo.models.register_family(SmallCNN)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="'MLP' is taken"):
        zoo.models.register_family(TinyNet, name="MLP")
