"""Compile options on CPU: zoo's programs leave convolutions to XLA's own kernels,
and those that run once or now and then take XLA's classic loop emitters.

On CPU, zoo compiles its training step, evaluation step and ``predict`` with a
compile option that keeps YNNPACK for matrix products and reductions and gives
convolutions to XLA's own kernels; evaluation, ``predict``, the initialisers
and the optimiser's initial state also with XLA's classic loop emitters
(``zoo._compiler_options``). These tests check that the options reach the
compiled programs, that they change no values beyond float32 rounding, that
zoo's steps still run inside another trace (where JAX refuses compile
options), and that an XLA that does not know an option goes without it, saying
so once.
"""

import re
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from zoo import _compiler_options
from zoo._compiler_options import jit_with_options
from zoo.data import Batch, Chunk
from zoo.train import TrainState, eval_step, make_train_step, predict
from zoo.train._predict import predict_program

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="the option is for XLA:CPU"
)


def _ynnpack_convolutions(compiled_text: str) -> int:
    """How many YNNPACK fusions of a compiled program a convolution starts.

    (A YNNPACK reduction may still take in the convolution that feeds it.)
    """
    bodies = dict(re.findall(r"^(%\S+) .*?\{\n(.*?)\n\}", compiled_text, re.M | re.S))
    called = re.findall(r"calls=(%[\w.\-]+).*__ynn_fusion", compiled_text)
    roots = [
        line
        for name in called
        for line in bodies.get(name, "").splitlines()
        if line.lstrip().startswith("ROOT")
    ]
    return sum(" convolution(" in root for root in roots)


def _text(lowered) -> str:
    """The optimised HLO of an ``eqx.filter_jit`` lowering, compiled."""
    return lowered.compile().compiled.as_text()


def _convolutions(compiled_text: str) -> int:
    return compiled_text.count(" convolution(")


def _wrapper(jitted: Any) -> Any:
    """zoo's jit-with-options wrapper of a program (a step keeps it inside)."""
    return getattr(jitted, "_jitted", jitted)


def _without_options(jitted: Any) -> Any:
    """The same function under plain ``eqx.filter_jit``: XLA:CPU's defaults."""
    return eqx.filter_jit(_wrapper(jitted).__wrapped__)


def _compiled_with(jitted: Any) -> list[dict[str, Any]]:
    """The sets of options zoo's wrapper has compiled ``jitted`` with so far."""
    return [dict(key) for key in _wrapper(jitted)._tuned]


def _model(name: str = "cnn"):
    return zoo.create_model(name, key=jax.random.key(0))


YNN = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    )
}
CLASSIC = {"xla_cpu_use_fusion_emitters": False}


def test_compiler_options_per_backend():
    option = zoo.train.compiler_options("cpu")
    assert option == YNN
    assert zoo.train.compiler_options("cpu", inference=True) == {**YNN, **CLASSIC}
    assert zoo.train.compiler_options() == option  # the tests run on CPU
    for backend in ("gpu", "tpu"):
        assert zoo.train.compiler_options(backend) == {}
        assert zoo.train.compiler_options(backend, inference=True) == {}
        assert _compiler_options.initialiser_options(backend) == {}
    option["changed"] = "1"  # a copy: the setting itself is not touched
    assert "changed" not in zoo.train.compiler_options("cpu")
    assert _compiler_options.initialiser_options("cpu") == {
        "xla_backend_optimization_level": 1,
        **CLASSIC,
    }


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_each_program_compiles_with_its_options(name: str):
    model, state = _model(name)
    # The options each of zoo's programs compiles with (their effect on the
    # compiled program is checked below).
    optimizer = optax.sgd(0.1)
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(1))
    chunk = Chunk(
        np.zeros((1, 2, *model.input_shape), np.float32),
        np.zeros((1, 2), np.int32),
        np.ones((1, 2), bool),
    )
    batch = Batch(chunk.inputs[0], chunk.labels[0], chunk.mask[0])
    step = make_train_step(optimizer)
    step.lower(ts, chunk)
    assert _compiled_with(step) == [YNN]  # XLA's default emitters
    eval_step.lower(model, state, batch)
    predict_program.lower(model, state, jnp.asarray(batch.inputs))
    for program in (eval_step, predict_program):
        assert _compiled_with(program) == [{**YNN, **CLASSIC}]


@pytest.mark.parametrize(
    "optimizer",
    [
        optax.adam(1e-3),
        optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)),
        optax.sgd(0.1, momentum=0.9),
        optax.contrib.schedule_free_adamw(1e-3),  # its state copies the params
    ],
    ids=["adam", "clip_adamw", "momentum", "schedule_free"],
)
def test_the_compiled_optimiser_state_is_the_eager_one(optimizer):
    model, state = _model("cnn")
    params = eqx.filter(model, eqx.is_inexact_array)
    compiled = TrainState.init(model, state, optimizer, key=jax.random.key(1))
    eager = optimizer.init(params)
    assert jax.tree.structure(compiled.opt_state) == jax.tree.structure(eager)
    for a, b in zip(
        jax.tree.leaves(compiled.opt_state), jax.tree.leaves(eager), strict=True
    ):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "needs_value",
    [
        lambda x: float(x.ravel()[0]) > 1e9,  # Python control flow on a value
        lambda x: np.asarray(x).sum() > 1e9,  # a NumPy copy
        lambda x: [0, 1][(x.ravel()[0] > 1e9).astype(int)] > 1,  # an index
    ],
    ids=["float", "numpy", "index"],
)
def test_an_optimiser_that_needs_concrete_values_is_initialised_eagerly(needs_value):
    def init(params):
        if needs_value(jax.tree.leaves(params)[0]):
            raise AssertionError("not reached")
        return optax.EmptyState()

    optimizer = optax.GradientTransformation(init, optax.identity().update)
    model, state = _model("mlp")
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(1))
    assert ts.opt_state == optax.EmptyState()


@pytest.mark.parametrize("name", ["stax_cnn", "cnn", "resnet8"])
def test_zoo_programs_leave_convolutions_to_xla(name: str):
    model, state = _model(name)
    optimizer = optax.adam(1e-3)
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(1))
    chunk = Chunk(
        np.zeros((1, 4, *model.input_shape), np.float32),
        np.zeros((1, 4), np.int32),
        np.ones((1, 4), bool),
    )
    step = make_train_step(optimizer)
    tuned = _text(step.lower(ts, chunk))
    plain = _text(_without_options(step).lower(ts, chunk))
    # Without the option YNNPACK takes convolutions (so this test can tell).
    assert _ynnpack_convolutions(plain) > 0
    assert _convolutions(tuned) > 0 and _ynnpack_convolutions(tuned) == 0

    batch = Batch(chunk.inputs[0], chunk.labels[0], chunk.mask[0])
    evaluation = _text(eval_step.lower(model, state, batch))
    assert _ynnpack_convolutions(evaluation) == 0
    inference = _text(predict_program.lower(model, state, jnp.asarray(batch.inputs)))
    assert _ynnpack_convolutions(inference) == 0


def test_both_kernels_train_alike():
    model, state = _model("cnn")
    # Plain SGD: parameter changes are the gradients, scaled (Adam would blow
    # float32 rounding in near-zero gradients up to a full step).
    optimizer = optax.sgd(0.1)
    ts = TrainState.init(model, state, optimizer, key=jax.random.key(1))
    rng = np.random.default_rng(0)
    chunk = Chunk(
        rng.random((2, 8, 1, 28, 28), np.float32),
        rng.integers(0, 10, (2, 8)).astype(np.int32),
        np.ones((2, 8), bool),
    )
    step = make_train_step(optimizer)
    plain = _without_options(step)
    xla_ts, xla_metrics = step(ts, chunk)
    ynn_ts, ynn_metrics = plain(ts, chunk)
    assert int(xla_metrics.correct) == int(ynn_metrics.correct)
    np.testing.assert_allclose(xla_metrics.loss_sum, ynn_metrics.loss_sum, rtol=1e-5)
    for a, b in zip(
        jax.tree.leaves(eqx.filter(xla_ts.model, eqx.is_array)),
        jax.tree.leaves(eqx.filter(ynn_ts.model, eqx.is_array)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_zoo_steps_run_inside_another_trace():
    model, state = _model("stax_cnn")
    x = jax.random.uniform(jax.random.key(2), (4, 1, 28, 28))
    top = predict(model, state, x)
    # JAX takes compile options at the top level only: inside jit the step
    # joins the enclosing program.
    inside = jax.jit(lambda x: predict(model, state, x))(x)
    np.testing.assert_array_equal(top, inside)
    batch = Batch(x, jnp.zeros(4, jnp.int32), jnp.ones(4, bool))
    # Only closed-over values, no traced argument: still inside a trace.
    closed = jax.jit(lambda: predict(model, state, x))()
    np.testing.assert_array_equal(top, closed)
    looped = jax.jit(lambda b: eval_step(model, state, b))(batch)
    assert int(looped.examples) == 4
    assert (
        int(
            jax.vmap(lambda b: eval_step(model, state, b).examples)(
                jax.tree.map(lambda a: a[None], batch)
            )[0]
        )
        == 4
    )


def test_other_errors_are_not_swallowed():
    def needs_positive(x: jax.Array) -> jax.Array:
        if x.shape[0] == 0:
            raise ValueError("empty input")
        return x * 2

    jitted = jit_with_options(zoo.train.compiler_options)(needs_positive)
    assert float(jitted(jnp.ones(1))[0]) == 2.0
    with pytest.raises(ValueError, match="empty input"):
        jitted(jnp.ones(0))
    with pytest.raises(ValueError, match="empty input"):
        jax.jit(jitted)(jnp.ones(0))


def test_an_xla_without_an_option_goes_without_it_and_says_so_once(monkeypatch):
    # The options are internal to XLA: a jaxlib that does not know one must
    # leave zoo's programs on XLA's defaults for it, with one warning.
    unknown = {"xla_cpu_no_such_option_in_any_xla": True}
    monkeypatch.setattr(_compiler_options, "CLASSIC_EMITTERS", unknown)
    _compiler_options._known.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="xla_cpu_no_such_option_in_any_xla"):
            assert zoo.train.compiler_options("cpu", inference=True) == YNN
        # Probed once: no second warning (warnings are errors in this suite).
        assert zoo.train.compiler_options("cpu", inference=True) == YNN
        assert _compiler_options.initialiser_options("cpu") == {
            "xla_backend_optimization_level": 1
        }
        model, state = zoo.create_model("stax_cnn", key=jax.random.key(3))

        @jit_with_options(lambda: zoo.train.compiler_options(inference=True))
        def twice(model, state, x):
            return predict(model, state, x), predict(model, state, x + 0)

        x = jnp.zeros((2, 1, 28, 28))
        first, second = twice(model, state, x)
        np.testing.assert_array_equal(first, second)
    finally:
        monkeypatch.undo()
        _compiler_options._known.cache_clear()
    assert zoo.train.compiler_options("cpu", inference=True) == {**YNN, **CLASSIC}
