"""Pretrained weights: where weight files are found, fetched and loaded.

A weight file ``<preset>-<dataset>.safetensors`` (see
[`zoo.save_safetensors`][]) comes with its card ``<preset>-<dataset>.json``
([`ModelCard`][zoo.models.ModelCard], in ``_cards``): how it was trained, how well it
does, and the SHA-256 the file must have. The card of a preset is looked for,
in order:

1. in ``$ZOO_WEIGHTS_DIR``, if set (your own weights, or copies);
2. in the package's ``zoo/weights/`` (the weights zoo ships);
3. in the download cache (``$ZOO_WEIGHTS_CACHE``, else
   ``$XDG_CACHE_HOME/zoo/weights``, else ``~/.cache/zoo/weights``);
4. at ``$ZOO_WEIGHTS_URL/<preset>-<dataset>.json``, if set: the card is
   downloaded and checked, then the weight file beside it, verified by its
   SHA-256 before it is put in place; the card is kept in the cache only once
   its weights are (``_hub`` says what is checked).

The weight file is taken from the folder where its card was found, by the one
name a card may give it. Weights named like the shipped ones are checked
against the SHA-256 of the card installed with zoo wherever they come from
(the cache, a server; a shipped card whose file is missing fetches it from
``$ZOO_WEIGHTS_URL``), never against a downloaded card; only
``$ZOO_WEIGHTS_DIR``, your own folder, may hold other weights under those
names. A file whose SHA-256 differs from what is expected is refused, never
loaded (and never deleted: delete it yourself, or fix the card). The
download cache follows no symbolic links.

Before a file's tensors are read, its config is built as shapes only and
checked against the tensors its header declares, and against its card's
config (``_safetensors.load_safetensors``).
"""

import json
import os
import pathlib
from typing import Any

import equinox as eqx
import jax
from jaxtyping import PRNGKeyArray

from .._files import atomic_write
from ..data._download import DEFAULT_TIMEOUT, _describe, _download, sha256_file
from . import _cards
from ._abstract import AbstractModel
from ._cards import (
    PACKAGE_WEIGHTS as PACKAGE_WEIGHTS,
    ModelCard as ModelCard,
    available_weights as available_weights,
    card_name as card_name,
    check_name,
    pinned_sha256,
    read_card,
    refuse_link,
    user_weights_dir,
    weights_cache_dir as weights_cache_dir,
    weights_dirs as weights_dirs,
    weights_file_name,
)
from ._hub import check_url, download_card, http_allowed, join, opener
from ._model_args import abstract_model
from ._registry import build_model, model_spec
from ._safetensors import (
    check_tensors,
    file_config,
    fill_arrays,
    is_array_like,
    load_safetensors,
    named_arrays,
    read_safetensors_header,
)
from ._transfer import head_only

_HEADER_ALLOWANCE = 1 << 16
"""Bytes a weight file may hold beyond its tensors (its JSON header), plus
256 a tensor (their names, shapes and offsets)."""


def _locate(
    preset: str, dataset: str, timeout: float, allow_http: bool | None
) -> tuple[ModelCard, pathlib.Path, bytes | None]:
    """The card of ``preset`` on ``dataset``, its folder, and its bytes if fresh.

    The bytes are those of a card just downloaded and not yet written: the
    caller keeps it in the cache once what it describes is there.
    """
    name = check_name(preset, dataset)
    cache = weights_cache_dir()
    for folder in weights_dirs():
        path = folder / f"{name}.json"
        if folder == cache:
            refuse_link(path)
        if path.is_file():
            return read_card(path, name=name), folder, None
    base = os.environ.get("ZOO_WEIGHTS_URL")
    if base:
        card, body = download_card(
            base, preset, dataset, timeout, http_allowed(allow_http)
        )
        return card, cache, body
    have = [d for p, d in available_weights(preset) if p == preset]
    presets = sorted({p for p, _ in available_weights()})
    where = ", ".join(str(d) for d in weights_dirs())
    raise ValueError(
        f"No pretrained weights for {preset!r} on {dataset!r}. Datasets with "
        f"weights for {preset!r}: {have or 'none'} (presets with weights: "
        f"{presets}). Looked in {where}; set ZOO_WEIGHTS_DIR to a folder of "
        "weight files and cards, or ZOO_WEIGHTS_URL to a base URL serving them."
    )


def _keep_card(name: str, body: bytes | None) -> None:
    if body is not None:
        cache = weights_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        atomic_write(cache / f"{name}.json", body, suffix=".part")


def model_card(
    name: str,
    dataset: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    allow_http: bool | None = None,
) -> ModelCard:
    """The card of the pretrained weights of preset ``name`` on ``dataset``.

    A card found only at ``$ZOO_WEIGHTS_URL`` is checked and kept in the cache.

    Example:
        >>> import zoo
        >>> card = zoo.model_card("mlp", "mnist")
        >>> card.test_count
        10000

    Args:
        name: a registered preset.
        dataset: the dataset it was trained on.
        timeout: seconds to wait on each network operation.
        allow_http: allow a plain ``http://`` ``$ZOO_WEIGHTS_URL``; ``None``
            allows it only if ``ZOO_WEIGHTS_ALLOW_HTTP=1``.

    Raises:
        KeyError: no preset called ``name``.
        ValueError: no weights for it on ``dataset`` (the message lists the
            datasets that have some), or an unreadable or invalid card.
    """
    model_spec(name)
    card, _, body = _locate(name, dataset, timeout, allow_http)
    _keep_card(card_name(name, dataset), body)
    return card


def _max_bytes(card: ModelCard) -> int:
    """The largest weight file ``card``'s config can need."""
    model, state = abstract_model(card.config, source=f"The card of {card.file}")
    arrays = named_arrays(model, state)
    tensors = sum(a.size * a.dtype.itemsize for a in arrays.values())
    return tensors + _HEADER_ALLOWANCE + 256 * len(arrays)


def weights_file(
    name: str,
    dataset: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    allow_http: bool | None = None,
) -> tuple[ModelCard, pathlib.Path]:
    """The card and the verified weight file of ``name`` on ``dataset``.

    A weight file missing from the cache (beside a downloaded card, or of a
    shipped card) is downloaded from ``$ZOO_WEIGHTS_URL`` and verified before
    it is put in place.

    Args:
        name: a registered preset.
        dataset: the dataset it was trained on.
        timeout: seconds to wait on each network operation.
        allow_http: allow a plain ``http://`` ``$ZOO_WEIGHTS_URL``; ``None``
            allows it only if ``ZOO_WEIGHTS_ALLOW_HTTP=1``.

    Raises:
        ValueError: no such weights; an invalid card; a refused URL; a link in
            the cache; a download that fails or is larger than its card's
            config needs (nothing is written); or a file whose SHA-256 differs
            from the one expected (refused: it is corrupt, or not the file the
            card describes).
    """
    model_spec(name)
    card, folder, body = _locate(name, dataset, timeout, allow_http)
    stem = card_name(name, dataset)
    expected, pin = card.sha256, pinned_sha256(stem)
    if pin is not None and folder != user_weights_dir():
        if card.sha256 != pin:
            raise ValueError(
                f"The card of {stem!r} in {folder} expects SHA-256 {card.sha256}, "
                f"but zoo ships these weights with SHA-256 {pin}: refused. Delete "
                "that card, or put your own weights in ZOO_WEIGHTS_DIR."
            )
        expected = pin
    cache = weights_cache_dir()
    path = folder / weights_file_name(name, dataset)
    if folder == _cards.PACKAGE_WEIGHTS and not path.is_file():
        path = cache / path.name  # a shipped card whose file is not installed
    if path.parent == cache:
        refuse_link(path)
    base = os.environ.get("ZOO_WEIGHTS_URL")
    if not path.is_file() and path.parent == cache and base:
        allowed = http_allowed(allow_http)
        url = join(base, path.name)
        check_url(url, allowed)
        limit = _max_bytes(card)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            _download(
                url, path, expected, timeout, max_bytes=limit, opener=opener(allowed)
            )
        except (OSError, ValueError) as error:
            raise ValueError(
                f"Could not download {url}: {_describe(error)}. Nothing was "
                "written; check the URL, or put the file in ZOO_WEIGHTS_DIR."
            ) from None
    if not path.is_file():
        raise ValueError(
            f"The card of {stem!r} in {folder} has no weight file {path} beside it."
        )
    actual = sha256_file(path)
    if actual != expected:
        whose = "zoo's own card" if expected == pin else "its card"
        raise ValueError(
            f"{path}: SHA-256 mismatch: {whose} expects {expected}, the file "
            f"has {actual}. It was not loaded: the file is corrupt or not the one "
            "the card describes. Delete it (a downloaded file is fetched again), "
            "or publish it again with its card."
        )
    _keep_card(stem, body)
    return card, path


def load_pretrained(
    name: str,
    dataset: str,
    *,
    key: PRNGKeyArray | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    allow_http: bool | None = None,
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
    card, path = weights_file(name, dataset, timeout=timeout, allow_http=allow_http)
    found, metadata = read_safetensors_header(path)
    saved = file_config(path, metadata)
    if saved != json.loads(json.dumps(dict(card.config))):
        raise ValueError(
            f"{path} holds a model of config {saved}, but its card describes "
            f"{dict(card.config)}: refused. Publish the file again with its card."
        )
    model, state = load_safetensors(path)
    if not overrides:
        return model, state
    if key is None:
        raise ValueError("Overriding a pretrained model's config needs `key=`.")
    config = {**model.config(), **overrides}
    # Shapes first: overrides that would not fit the weights are refused
    # before the new model is built.
    shape, shape_state = abstract_model(config, source=f"Overrides {overrides}")
    # The head of the saved model: out_size=0 builds a model without one.
    heads = {
        jax.tree_util.keystr(p).removeprefix(".")
        for p, leaf in jax.tree_util.tree_flatten_with_path(
            eqx.filter(model, head_only(model))
        )[0]
        if is_array_like(leaf)
    }
    fresh_head = "out_size" in overrides  # a new task: a new head
    wanted = {
        tensor: array
        for tensor, array in named_arrays(shape, shape_state).items()
        if not (tensor in heads and fresh_head)
    }
    advice = (
        f"Overrides {overrides} change the pretrained backbone of {name!r}: with "
        "pretrained weights only the head may change (out_size=); build other "
        "shapes without pretrained=."
    )
    check_tensors(
        path,
        wanted,
        {t: found[t] for t in found if not (t in heads and fresh_head)},
        advice=advice,
    )
    old = named_arrays(model, state)
    new, new_state = build_model(config, key=key)
    return fill_arrays(new, new_state, {tensor: old[tensor] for tensor in wanted})
