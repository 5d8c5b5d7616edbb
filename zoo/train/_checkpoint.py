"""Save and load a run: its ``TrainState``, data position and metadata.

A checkpoint directory holds atomic versions (``zoo.train._checkpoint_dir``);
each version holds the files of ``zoo.train._checkpoint_files``. Loading
verifies every file and every array leaf and raises [`zoo.CheckpointError`][]
rather than load anything silently wrong.
"""

import dataclasses
import json
import operator
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .._version import __version__
from ..models._foreign import is_zoo_model, model_config
from ..models._registry import build_model
from ._checkpoint_dir import (
    CheckpointError,
    corrupt,
    ensure_writable,
    latest_checkpoint,
    parse_json,
    read_version,
    write_version,
)
from ._checkpoint_files import (
    CONFIG,
    MAX_STEP,
    MODEL,
    OPT_STATE,
    TRAINER,
    check_config,
    check_paths,
    check_x64,
    describe_config,
    dumps,
    key_to_json,
    leaf_records,
    parse_leaves,
    parse_trainer,
    read_leaves,
)
from ._state import TrainState

# The checkpoint API in one place: this module's own names, and the directory
# functions a training loop calls beside them.
__all__ = [
    "Checkpoint",
    "CheckpointError",
    "ensure_writable",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Everything needed to continue a training run exactly where it stopped.

    Attributes:
        train_state: the [`TrainState`][zoo.train.TrainState], its arrays and key
            bitwise identical to those saved. Its ``opt_state`` is ``None`` when
            none was saved or none was asked for (see
            [`load_checkpoint`][zoo.train.load_checkpoint]).
        data_state: the data iterator's ``get_state()`` (JSON), or ``None``.
        metadata: any other JSON data saved with the run (history, config, ...).
    """

    train_state: TrainState
    data_state: dict[str, Any] | None
    metadata: dict[str, Any]


# --------------------------------------------------------------------------- save


def save_checkpoint(
    directory: str | os.PathLike[str],
    train_state: TrainState,
    *,
    data_state: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    keep: int = 2,
) -> pathlib.Path:
    """Save a new version of a run's checkpoint, atomically.

    The version ``step_<step>`` (8 or more digits) is written to a hidden
    temporary directory inside ``directory``, fsynced, renamed into place and then
    named in ``LATEST``, which is replaced atomically. A crash (even ``SIGKILL``
    or power loss) at any point leaves the previous version loadable. Then
    leftovers of interrupted saves are removed, and so are old versions: the one
    just written and the ``keep - 1`` versions with the highest steps below it
    stay, and versions with a higher step (an abandoned later run) go. Saving the
    same step again replaces that version, also atomically. Files in
    ``directory`` that are not checkpoint versions are left alone. One process at
    a time may save into a directory.

    To save a model without an optimiser (for inference), give a ``TrainState``
    whose ``opt_state`` is ``None``, e.g. ``TrainState.init(model, state, None,
    key=key)``.

    Args:
        directory: the run's checkpoint directory (created if needed).
        train_state: the run's state. Its model's ``config()`` is saved to
            rebuild it (for a model zoo did not build, its class, to recognise
            it: loading it needs ``like``); its ``key`` must be a typed key
            from ``jax.random.key`` (wrap raw ``uint32`` keys with
            ``jax.random.wrap_key_data``); its ``step`` (>= 0) names the
            version.
        data_state: the data iterator's ``get_state()``; must be JSON.
        metadata: anything else to keep with the run (history, run config,
            epoch, ...); must be JSON. Tuples come back as lists.
        keep: how many versions to keep (>= 1).

    Returns:
        The path of the version directory just written.

    Raises:
        CheckpointError: the directory cannot be created or written (the message
            names the path and the operating system's error).
        TypeError: ``train_state`` is not a ``TrainState`` or its model not an
            ``eqx.Module``, its ``key`` is not a typed PRNG key, or
            ``data_state``/``metadata`` is not JSON.
        ValueError: a negative ``step`` or ``keep < 1``.
    """
    if not isinstance(train_state, TrainState):
        raise TypeError(
            f"`train_state` must be a zoo.train.TrainState, got {type(train_state)}."
        )
    model, state, opt_state = (
        train_state.model,
        train_state.model_state,
        train_state.opt_state,
    )
    step = _check_step(train_state.step)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"`keep` must be an int >= 1, got {keep!r}.")
    if not isinstance(model, eqx.Module):
        raise TypeError(
            f"The model must be an Equinox module (a zoo model or any eqx.Module), "
            f"got {type(model)}."
        )
    files = {
        CONFIG: dumps("the model's config()", model_config(model)),
        MODEL: lambda f: eqx.tree_serialise_leaves(f, (model, state)),
    }
    if opt_state is not None:
        files[OPT_STATE] = lambda f: eqx.tree_serialise_leaves(f, opt_state)
    files[TRAINER] = dumps(
        "data_state/metadata",
        {
            "step": step,
            "key": key_to_json(train_state.key),
            "data_state": None if data_state is None else dict(data_state),
            "metadata": {} if metadata is None else dict(metadata),
            "zoo_version": __version__,
        },
    )
    leaves = {
        "model": leaf_records(model),
        "state": leaf_records(state),
        "opt_state": None if opt_state is None else leaf_records(opt_state),
    }
    return write_version(directory, step, files, manifest={"leaves": leaves}, keep=keep)


def _check_step(step: Any) -> int:
    try:
        if isinstance(step, bool) or not jnp.issubdtype(
            getattr(step, "dtype", int), jnp.integer
        ):
            raise TypeError
        value = operator.index(step)
    except TypeError:
        raise TypeError(f"The step must be an int, got {step!r}.") from None
    if not 0 <= value <= MAX_STEP:
        raise ValueError(f"The step must be in [0, 2**31), got {value}.")
    return value


# --------------------------------------------------------------------------- load


def load_checkpoint(
    directory: str | os.PathLike[str],
    *,
    like: TrainState | None = None,
    optimizer: optax.GradientTransformation | None = None,
) -> Checkpoint:
    """Load the current version of a run's checkpoint, verified.

    Every file is checked against the manifest's sha256 and size, and every array
    leaf's keypath, shape and dtype against the structure it is loaded into. The
    arrays come back bitwise identical to those saved, the PRNG key included.

    Example:
        >>> import jax, optax, tempfile, zoo
        >>> model, state = zoo.create_model("toy_mlp", key=jax.random.key(0))
        >>> adam = optax.adam(1e-3)
        >>> ts = zoo.train.TrainState.init(model, state, adam, key=jax.random.key(1))
        >>> with tempfile.TemporaryDirectory() as run:
        ...     _ = zoo.save_checkpoint(run, ts, metadata={"epoch": 3})
        ...     ckpt = zoo.load_checkpoint(run, like=ts)
        >>> int(ckpt.train_state.step), ckpt.metadata
        (0, {'epoch': 3})

    Args:
        directory: a run's checkpoint directory (see [`zoo.train.latest_checkpoint`][]
            for which version is read), or one version directory inside it.
        like: the state to load into, e.g. the fresh ``TrainState`` of the run
            being resumed: its model's ``config()`` and array leaves must match
            the checkpoint's, and its ``opt_state`` gives the structure of the
            saved optimiser state (``None``: the optimiser state is not loaded).
            A checkpoint saved without optimiser state loads with ``opt_state``
            ``None``. Without ``like`` the model is rebuilt from ``config.json``,
            which only a zoo model's checkpoint allows: a model zoo did not
            build (any other ``eqx.Module``) needs ``like``.
        optimizer: without ``like``, the run's optimiser: its ``init`` on the
            model's inexact arrays gives the structure the saved optimiser state
            is loaded into. Without it (and without ``like``) the loaded
            ``opt_state`` is ``None``.

    Returns:
        The [`zoo.Checkpoint`][].

    Raises:
        CheckpointError: no checkpoint in ``directory``; a missing, truncated or
            corrupt file (named, with what to do); a checkpoint written for
            another model config or optimiser (naming the first leaf that
            differs, with both shapes); a checkpoint of a model zoo did not
            build, without ``like``.
        TypeError: both ``like`` and ``optimizer`` given, or ``like`` is not a
            ``TrainState`` of a zoo model.
    """
    if like is not None:
        if optimizer is not None:
            raise TypeError(
                "Give `like` or `optimizer`, not both: like.opt_state already "
                "gives the structure of the optimiser state."
            )
        if not isinstance(like, TrainState):
            raise TypeError(f"`like` must be a zoo.train.TrainState, got {type(like)}.")
        if not isinstance(like.model, eqx.Module):
            raise TypeError(
                f"`like` must hold an Equinox model, got {type(like.model)}."
            )
    version = read_version(directory)
    path, files = version.path, version.files
    leaves = parse_leaves(path, version.manifest)
    trainer = parse_trainer(path, files[TRAINER])
    config = parse_json(path, CONFIG, files[CONFIG])
    if not isinstance(config, dict):
        raise corrupt(path, CONFIG, "it is not a JSON object")
    written_by = (
        f"the checkpoint {path} was written for config "
        f"{json.dumps(config)} (zoo {trainer['zoo_version']})"
    )

    if like is None:
        structure = _build_structure(path, config, written_by)
        advice = (
            f"{written_by}. This zoo builds that config differently: load it with "
            "the zoo version that wrote it."
        )
        expects = "its config.json builds"
    else:
        structure = (like.model, like.model_state)
        rebuild = (
            "Build the model from that config (zoo.models.build_model) to resume it"
            if "family" in config
            else "Load it into a model of the class that wrote it"
        )
        advice = (
            f"{written_by}. {rebuild}, or resume from a checkpoint directory of "
            "this model."
        )
        expects = "the model expects"
    if like is not None and not (is_zoo_model(like.model) and "family" in config):
        check_config(like.model, config, advice)  # another kind of model: say so
    for section, tree in zip(("model", "state"), structure, strict=True):
        check_paths(section, leaves[section], tree, expects, advice)
    check_x64(path, leaves, ("model", "state"))
    model, state = read_leaves(path, MODEL, files[MODEL], structure, advice)
    if like is not None:
        check_config(like.model, config, advice)

    opt_state = None
    saved_opt = leaves["opt_state"]
    opt_structure = None if like is None else like.opt_state
    if optimizer is not None:
        if saved_opt is None:
            raise CheckpointError(
                f"The checkpoint {path} has no optimiser state, but an `optimizer` "
                "was given. Load it with optimizer=None and initialise the "
                "optimiser afresh."
            )
        opt_structure = _optimizer_structure(optimizer, model, written_by)
    if opt_structure is not None and saved_opt is not None:
        advice = (
            f"the checkpoint {path} was written with a different optimiser. Resume "
            "with the optimiser of the run that wrote it, or load the model alone "
            "(optimizer=None, or a `like` whose opt_state is None)."
        )
        check_paths(
            "optimiser state", saved_opt, opt_structure, "the optimiser expects", advice
        )
        check_x64(path, leaves, ("opt_state",))
        (opt_state,) = read_leaves(
            path, OPT_STATE, files[OPT_STATE], (opt_structure,), advice
        )
    train_state = TrainState(
        model, state, opt_state, trainer["key"], jnp.int32(trainer["step"])
    )
    return Checkpoint(train_state, trainer["data_state"], trainer["metadata"])


def load_model(
    directory: str | os.PathLike[str],
    *,
    like: Any = None,
) -> tuple[Any, eqx.nn.State | None]:
    """Rebuild a trained model from its checkpoint directory alone.

    A zoo model (a registered family, see
    [`zoo.models.register_family`][zoo.models.register_family]) is rebuilt
    from the checkpoint's config. A model zoo did not build (any other
    ``eqx.Module``) cannot be: give ``like``, a model of the same structure
    (e.g. freshly built with any key), and its arrays are loaded into it.

    Example:
        >>> import jax, tempfile, zoo
        >>> model, state = zoo.create_model("toy_mlp", key=jax.random.key(0))
        >>> ts = zoo.train.TrainState.init(model, state, None, key=jax.random.key(1))
        >>> with tempfile.TemporaryDirectory() as run:
        ...     _ = zoo.save_checkpoint(run, ts)
        ...     loaded, _ = zoo.load_model(run)
        >>> loaded.config() == model.config()
        True

    Args:
        directory: a run's checkpoint directory, or one version directory in it.
        like: the model to load into, or a pair ``(model, state)`` for a model
            with state (from ``eqx.nn.make_with_state``); ``None``: rebuilt
            from the checkpoint's config.

    Returns:
        ``(model, state)``, as saved (``state`` is ``None`` for a model zoo
        did not build that was trained without one).

    Raises:
        CheckpointError: as for [`zoo.load_checkpoint`][]; without ``like``,
            a checkpoint of a model zoo did not build (the message says to
            pass ``like``).
    """
    template = None
    if like is not None:
        model, state = like if isinstance(like, tuple) else (like, None)
        template = TrainState(model, state, None, jax.random.key(0), jnp.int32(0))
    train_state = load_checkpoint(directory, like=template).train_state
    return train_state.model, train_state.model_state


def _build_structure(
    path: pathlib.Path, config: dict[str, Any], written_by: str
) -> tuple[Any, Any]:
    if "family" not in config and "class" in config:
        raise CheckpointError(
            f"{path} holds {describe_config(config)}, which zoo did not build, "
            f"so {CONFIG} cannot rebuild it. Load it into a model of the same "
            "structure: zoo.load_model(directory, like=model) (like=(model, "
            "state) for a model with state), or zoo.load_checkpoint(directory, "
            "like=train_state)."
        )
    try:
        return eqx.filter_eval_shape(build_model, config, key=jax.random.key(0))
    except Exception as error:
        raise CheckpointError(
            f"{path / CONFIG} describes no model this zoo can build "
            f"({error}); {written_by}."
        ) from error


def _optimizer_structure(
    optimizer: optax.GradientTransformation, model: eqx.Module, written_by: str
) -> Any:
    try:
        # optax is written for JAX's standard dtype promotion
        with jax.numpy_dtype_promotion("standard"):
            return eqx.filter_eval_shape(
                lambda m: optimizer.init(eqx.filter(m, eqx.is_inexact_array)), model
            )
    except Exception as error:
        raise CheckpointError(
            f"Cannot initialise the optimiser for the checkpoint's model "
            f"({error}); {written_by}."
        ) from error
