"""Pretrained weights: model cards, where weight files are found, and loading.

A weight file ``<preset>-<dataset>.safetensors`` (see
[`zoo.save_safetensors`][]) comes with its card ``<preset>-<dataset>.json``
([`ModelCard`][zoo.ModelCard]): how it was trained, how well it does, and the
SHA-256 the file must have. The card of a preset is looked for, in order:

1. in ``$ZOO_WEIGHTS_DIR``, if set (your own weights, or copies);
2. in the package's ``zoo/weights/`` (the weights zoo ships);
3. in the download cache (``$ZOO_WEIGHTS_CACHE``, else
   ``$XDG_CACHE_HOME/zoo/weights``, else ``~/.cache/zoo/weights``);
4. at ``$ZOO_WEIGHTS_URL/<preset>-<dataset>.json``, if set: the card is
   downloaded into the cache, then the weight file beside it, verified by the
   card's SHA-256 before it is put in place.

The weight file is taken from the folder where its card was found. A file
whose SHA-256 differs from its card's is refused, never loaded (and never
deleted: delete it yourself, or fix the card).
"""

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
from jaxtyping import PRNGKeyArray

from .._files import atomic_write
from ..data._download import DEFAULT_TIMEOUT, _describe, _download, _open, sha256_file
from ._abstract import AbstractModel
from ._registry import build_model, model_spec
from ._safetensors import fill_arrays, load_safetensors, named_arrays
from ._transfer import head_only

PACKAGE_WEIGHTS = pathlib.Path(__file__).resolve().parent.parent / "weights"
"""The folder of the weight files and cards that ship with zoo."""
_MAX_CARD_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """What a pretrained weight file is, how it was made and how well it does.

    Stored as JSON beside the weight file (``to_json`` / ``from_json``).

    Attributes:
        preset: the registered preset (``zoo.create_model(preset, ...)``).
        dataset: the data set it was trained on (``"mnist"``, ...).
        file: the weight file's name, ``<preset>-<dataset>.safetensors``.
        sha256: the SHA-256 (hex) the weight file must have.
        config: the model's config (``model.config()``).
        parameter_count: the number of trained parameters (state excluded).
        input_shape: the shape of one input example, e.g. ``[1, 28, 28]``.
        preprocessing: how inputs are prepared, in words.
        classes: the class names, by label.
        command: the exact command that trained it.
        seed: the run's seed.
        epochs: the epochs it trained for.
        test_correct: test images classified correctly.
        test_count: test images evaluated (the whole test set).
        test_accuracy: ``test_correct / test_count``.
        correct_tolerance: by how many images ``test_correct`` may differ on
            another CPU (float rounding of near ties); 0 if none can flip.
        seconds_per_epoch: training seconds per epoch (median, compile excluded).
        machine: the CPU it trained on, with its core count.
        zoo_version: the zoo version that trained it.
        notes: anything else worth knowing.
    """

    preset: str
    dataset: str
    file: str
    sha256: str
    config: Mapping[str, Any]
    parameter_count: int
    input_shape: tuple[int, ...]
    preprocessing: str
    classes: tuple[str, ...]
    command: str
    seed: int
    epochs: int
    test_correct: int
    test_count: int
    test_accuracy: float
    correct_tolerance: int
    seconds_per_epoch: float
    machine: str
    zoo_version: str
    notes: str = ""

    def to_json(self) -> dict[str, Any]:
        """The card as a JSON object (tuples as lists)."""
        out = dataclasses.asdict(self)
        out["config"] = dict(self.config)
        out["input_shape"] = list(self.input_shape)
        out["classes"] = list(self.classes)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str = "card") -> "ModelCard":
        """A card from its JSON object.

        Raises:
            ValueError: a field is missing or unknown (the message names it
                and ``source``).
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
        }
        missing, unknown = sorted(required - set(data)), sorted(set(data) - fields)
        if missing or unknown:
            raise ValueError(
                f"{source} is not a zoo model card: missing fields {missing}, "
                f"unknown fields {unknown}."
            )
        values = dict(data)
        values["input_shape"] = tuple(values["input_shape"])
        values["classes"] = tuple(values["classes"])
        return cls(**values)


def card_name(preset: str, dataset: str) -> str:
    """The stem of a weight file and its card: ``<preset>-<dataset>``."""
    return f"{preset}-{dataset}"


def weights_cache_dir() -> pathlib.Path:
    """Where downloaded weights are kept.

    Returns:
        ``$ZOO_WEIGHTS_CACHE`` if set, else ``$XDG_CACHE_HOME/zoo/weights``,
        else ``~/.cache/zoo/weights``.
    """
    if env := os.environ.get("ZOO_WEIGHTS_CACHE"):
        return pathlib.Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return pathlib.Path(xdg).expanduser() / "zoo" / "weights"
    return pathlib.Path.home() / ".cache" / "zoo" / "weights"


def weights_dirs() -> list[pathlib.Path]:
    """The local folders searched for weights, in order (see the module notes)."""
    dirs = []
    if env := os.environ.get("ZOO_WEIGHTS_DIR"):
        dirs.append(pathlib.Path(env).expanduser())
    return [*dirs, PACKAGE_WEIGHTS, weights_cache_dir()]


def _read_card(path: pathlib.Path) -> ModelCard:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read the model card {path}: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"The model card {path} is not a JSON object.")
    return ModelCard.from_json(data, source=str(path))


def available_weights(preset: str | None = None) -> list[tuple[str, str]]:
    """The ``(preset, dataset)`` pairs with a card in a local weights folder.

    Args:
        preset: only this preset's; ``None`` for all.

    Returns:
        Sorted pairs, each once (weights at ``$ZOO_WEIGHTS_URL`` are not
        listed until they are downloaded).
    """
    found = set()
    for folder in weights_dirs():
        pattern = "*.json" if preset is None else f"{preset}-*.json"
        for path in folder.glob(pattern) if folder.is_dir() else ():
            try:
                card = _read_card(path)
            except ValueError:
                continue
            if path.stem == card_name(card.preset, card.dataset):
                found.add((card.preset, card.dataset))
    return sorted(found)


def _download_card(base: str, name: str, cache: pathlib.Path, timeout: float) -> None:
    url = f"{base.rstrip('/')}/{name}.json"
    try:
        with _open(url, timeout) as response:
            body = response.read(_MAX_CARD_BYTES + 1)
    except OSError as error:
        raise ValueError(f"Could not download the model card {url}: "
                         f"{_describe(error)}.") from None  # fmt: skip
    if len(body) > _MAX_CARD_BYTES:
        raise ValueError(f"{url} is larger than a model card can be.")
    try:
        card = ModelCard.from_json(json.loads(body), source=url)
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{url} is not a zoo model card: {error}") from None
    if card_name(card.preset, card.dataset) != name:
        raise ValueError(f"{url} is the card of {card.preset!r} on {card.dataset!r}.")
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write(cache / f"{name}.json", body)


def _locate(
    preset: str, dataset: str, timeout: float
) -> tuple[ModelCard, pathlib.Path]:
    """The card of ``preset`` on ``dataset`` and the folder it was found in."""
    name = card_name(preset, dataset)
    for folder in weights_dirs():
        if (folder / f"{name}.json").is_file():
            return _read_card(folder / f"{name}.json"), folder
    base = os.environ.get("ZOO_WEIGHTS_URL")
    if base:
        cache = weights_cache_dir()
        _download_card(base, name, cache, timeout)
        return _read_card(cache / f"{name}.json"), cache
    have = [d for p, d in available_weights(preset) if p == preset]
    presets = sorted({p for p, _ in available_weights()})
    where = ", ".join(str(d) for d in weights_dirs())
    raise ValueError(
        f"No pretrained weights for {preset!r} on {dataset!r}. Datasets with "
        f"weights for {preset!r}: {have or 'none'} (presets with weights: "
        f"{presets}). Looked in {where}; set ZOO_WEIGHTS_DIR to a folder of "
        "weight files and cards, or ZOO_WEIGHTS_URL to a base URL serving them."
    )


def model_card(
    name: str, dataset: str, *, timeout: float = DEFAULT_TIMEOUT
) -> ModelCard:
    """The card of the pretrained weights of preset ``name`` on ``dataset``.

    Example:
        >>> import zoo
        >>> card = zoo.model_card("mlp", "mnist")
        >>> card.test_count
        10000

    Raises:
        KeyError: no preset called ``name``.
        ValueError: no weights for it on ``dataset`` (the message lists the
            datasets that have some), or an unreadable card.
    """
    model_spec(name)
    return _locate(name, dataset, timeout)[0]


def weights_file(
    name: str, dataset: str, *, timeout: float = DEFAULT_TIMEOUT
) -> tuple[ModelCard, pathlib.Path]:
    """The card and the verified weight file of ``name`` on ``dataset``.

    A missing weight file beside a downloaded card is downloaded from
    ``$ZOO_WEIGHTS_URL`` and verified before it is put in place.

    Raises:
        ValueError: no such weights, or a file whose SHA-256 differs from its
            card (refused: it is corrupt, or not the file the card describes).
    """
    model_spec(name)
    card, folder = _locate(name, dataset, timeout)
    path = folder / card.file
    base = os.environ.get("ZOO_WEIGHTS_URL")
    if not path.is_file() and folder == weights_cache_dir() and base:
        url = f"{base.rstrip('/')}/{card.file}"
        try:
            _download(url, path, card.sha256, timeout)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"Could not download {url}: {_describe(error)}. Nothing was "
                "written; check the URL, or put the file in ZOO_WEIGHTS_DIR."
            ) from None
    if not path.is_file():
        raise ValueError(f"The card {folder / (path.stem + '.json')} has no "
                         f"weight file {path} beside it.")  # fmt: skip
    actual = sha256_file(path)
    if actual != card.sha256:
        raise ValueError(
            f"{path}: SHA-256 mismatch: its card expects {card.sha256}, the file "
            f"has {actual}. It was not loaded: the file is corrupt or not the one "
            "the card describes. Delete it (a downloaded file is fetched again), "
            "or publish it again with its card."
        )
    return card, path


def load_pretrained(
    name: str,
    dataset: str,
    *,
    key: PRNGKeyArray | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    **overrides: Any,
) -> tuple[AbstractModel, eqx.nn.State]:
    """The preset ``name`` with the weights it learned on ``dataset``.

    ``zoo.create_model(name, pretrained=dataset, key=key, **overrides)`` calls
    this. Overrides that leave every parameter's shape alone (``dropout=``)
    keep all the weights. ``out_size=K`` (even ``K`` classes as before) keeps
    the backbone and draws a fresh classifier from ``key``, for transfer
    learning to another task.

    Raises:
        ValueError: no such weights, a hash mismatch, or overrides that change
            the shape of a backbone parameter (the message names it).
    """
    _, path = weights_file(name, dataset, timeout=timeout)
    model, state = load_safetensors(path)
    if not overrides:
        return model, state
    if key is None:
        raise ValueError("Overriding a pretrained model's config needs `key=`.")
    config = {**model.config(), **overrides}
    new, new_state = build_model(config, key=key)
    old = named_arrays(model, state)
    spec = head_only(new)
    heads = {
        jax.tree_util.keystr(p).removeprefix(".")
        for p, _ in jax.tree_util.tree_flatten_with_path(
            eqx.filter(eqx.filter(new, eqx.is_array), spec)
        )[0]
    }
    fresh_head = "out_size" in overrides  # a new task: a new head
    keep: dict[str, Any] = {}
    for tensor, array in named_arrays(new, new_state).items():
        if tensor in heads and fresh_head:
            continue
        before = old.get(tensor)
        if before is None or before.shape != array.shape or before.dtype != array.dtype:
            had = "none" if before is None else f"{before.shape} {before.dtype}"
            raise ValueError(
                f"Overrides {overrides} change the pretrained backbone of "
                f"{name!r}: tensor {tensor!r} would be {tuple(array.shape)} "
                f"{array.dtype}, the weights have {had}. With pretrained weights "
                "only the head may change (out_size=); build other shapes "
                "without pretrained=."
            )
        keep[tensor] = before
    dropped = sorted(set(old) - set(keep) - heads)
    if dropped:
        raise ValueError(
            f"Overrides {overrides} drop pretrained tensor {dropped[0]!r} of "
            f"{name!r}: only the head may change with pretrained weights."
        )
    return fill_arrays(new, new_state, keep)
