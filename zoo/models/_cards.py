"""Model cards: what a pretrained weight file is, and where cards are kept.

A weight file ``<preset>-<dataset>.safetensors`` comes with its card
``<preset>-<dataset>.json`` ([`ModelCard`][zoo.models.ModelCard]). This module reads,
checks and lists cards; it builds no model and touches no network
(``_pretrained`` loads weights, ``_hub`` downloads them), so the registry can
list the presets with weights without importing either.

A card is checked field by field as it is read, wherever it comes from: every
field has its type, the SHA-256 is 64 hex digits, and the weight file it names
is exactly ``<preset>-<dataset>.safetensors``, one plain file name, so that no
card can point outside the folder it was found in.
"""

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

PACKAGE_WEIGHTS = pathlib.Path(__file__).resolve().parent.parent / "weights"
"""The folder of the weight files and cards that ship with zoo."""

WEIGHTS_SUFFIX = ".safetensors"
"""The suffix of every weight file."""

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*")
"""A preset or dataset name: letters, digits, ``_`` and ``.``, not first ``.``."""
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_PROVENANCE_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_PROVENANCE_VALUE_MAX = 256


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """What a pretrained weight file is, how it was made and how well it does.

    Stored as JSON beside the weight file (``to_json`` / ``from_json``).

    Attributes:
        preset: the registered preset (``zoo.create_model(preset, ...)``).
        dataset: the data set it was trained on (``"mnist"``, ...).
        file: the weight file's name, exactly ``<preset>-<dataset>.safetensors``.
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
        provenance: what else made the file, so that a run can be repeated bit
            for bit: ``zoo_commit`` (git commit, ``+dirty`` when the tree had
            changes), ``jax`` and ``jaxlib`` (versions), ``cpu`` (the model
            name) and ``cpu_flags`` (a short SHA-256 of its instruction-set
            flags); any other plain key may be added. Empty in cards older
            than zoo 0.3.0.
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
    provenance: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The card as a JSON object (tuples as lists)."""
        out = dataclasses.asdict(self)
        out["config"] = dict(self.config)
        out["input_shape"] = list(self.input_shape)
        out["classes"] = list(self.classes)
        out["provenance"] = dict(self.provenance)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str = "card") -> "ModelCard":
        """A card from its JSON object, every field checked.

        Raises:
            ValueError: a field is missing, unknown or of the wrong type, the
                SHA-256 is not 64 lowercase hex digits, or ``file`` is not
                ``<preset>-<dataset>.safetensors`` (the message names the field
                and ``source``).
        """
        if not isinstance(data, Mapping):
            raise ValueError(
                f"{source} is not a zoo model card: it is a JSON "
                f"{type(data).__name__}, not an object."
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        }
        missing, unknown = sorted(required - set(data)), sorted(set(data) - fields)
        if missing or unknown:
            raise ValueError(
                f"{source} is not a zoo model card: missing fields {missing}, "
                f"unknown fields {unknown}."
            )
        for name, value in data.items():
            if not _FIELD_CHECKS[name](value):
                raise ValueError(
                    f"{source} is not a valid zoo model card: field {name!r} must "
                    f"be {_FIELD_TYPES[name]}, got {_show(value)}."
                )
        for name in ("preset", "dataset"):
            if not _NAME_RE.fullmatch(data[name]):
                raise ValueError(
                    f"{source} is not a valid zoo model card: {name} "
                    f"{data[name]!r} is not a plain name (letters, digits, '_' "
                    "and '.', not starting with '.')."
                )
        if not _SHA256_RE.fullmatch(data["sha256"]):
            raise ValueError(
                f"{source} is not a valid zoo model card: its sha256 "
                f"{_show(data['sha256'])} is not 64 lowercase hex digits."
            )
        expected = weights_file_name(data["preset"], data["dataset"])
        if data["file"] != expected:
            raise ValueError(
                f"{source} is not a valid zoo model card: its file "
                f"{_show(data['file'])} must be exactly {expected!r}, the weight "
                "file beside the card (a card names no other path)."
            )
        values = dict(data)
        values["config"] = dict(values["config"])
        values["input_shape"] = tuple(values["input_shape"])
        values["classes"] = tuple(values["classes"])
        if "provenance" in values:
            values["provenance"] = dict(values["provenance"])
        return cls(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_provenance(value: Any) -> bool:
    """An object of short strings under plain lowercase keys."""
    return isinstance(value, dict) and all(
        _is_str(k) and _PROVENANCE_KEY_RE.fullmatch(k) and _is_str(v)
        and len(v) <= _PROVENANCE_VALUE_MAX
        for k, v in value.items()
    )  # fmt: skip


_CHECKS_AND_TYPES: dict[str, tuple[Any, str]] = {
    "preset": (_is_str, "a string"),
    "dataset": (_is_str, "a string"),
    "file": (_is_str, "a string"),
    "sha256": (_is_str, "a string"),
    "config": (
        lambda v: isinstance(v, dict) and all(map(_is_str, v)),
        "an object",
    ),
    "parameter_count": (_is_count, "an int >= 0"),
    "input_shape": (
        lambda v: isinstance(v, list | tuple) and all(map(_is_count, v)),
        "a list of ints >= 0",
    ),
    "preprocessing": (_is_str, "a string"),
    "classes": (
        lambda v: isinstance(v, list | tuple) and all(map(_is_str, v)),
        "a list of strings",
    ),
    "command": (_is_str, "a string"),
    "seed": (_is_int, "an int"),
    "epochs": (_is_count, "an int >= 0"),
    "test_correct": (_is_count, "an int >= 0"),
    "test_count": (_is_count, "an int >= 0"),
    "test_accuracy": (_is_number, "a number"),
    "correct_tolerance": (_is_count, "an int >= 0"),
    "seconds_per_epoch": (_is_number, "a number"),
    "machine": (_is_str, "a string"),
    "zoo_version": (_is_str, "a string"),
    "notes": (_is_str, "a string"),
    "provenance": (
        _is_provenance,
        "an object of strings (at most 256 characters) under lowercase keys",
    ),
}
_FIELD_CHECKS = {name: check for name, (check, _) in _CHECKS_AND_TYPES.items()}
_FIELD_TYPES = {name: kind for name, (_, kind) in _CHECKS_AND_TYPES.items()}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def check_name(preset: str, dataset: str) -> str:
    """``<preset>-<dataset>``, once both are plain names.

    Raises:
        ValueError: either is not a plain name (a path, an empty string, ...).
    """
    for what, name in (("preset", preset), ("dataset", dataset)):
        if not (isinstance(name, str) and _NAME_RE.fullmatch(name)):
            raise ValueError(
                f"The {what} name {_show(name)} is not a plain name: use letters, "
                "digits, '_' and '.' (not first), e.g. 'mnist'."
            )
    return card_name(preset, dataset)


def card_name(preset: str, dataset: str) -> str:
    """The stem of a weight file and its card: ``<preset>-<dataset>``."""
    return f"{preset}-{dataset}"


def weights_file_name(preset: str, dataset: str) -> str:
    """The one name the weight file of ``preset`` on ``dataset`` may have."""
    return card_name(preset, dataset) + WEIGHTS_SUFFIX


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


def user_weights_dir() -> pathlib.Path | None:
    """``$ZOO_WEIGHTS_DIR``, the user's own folder of weights, if set."""
    env = os.environ.get("ZOO_WEIGHTS_DIR")
    return pathlib.Path(env).expanduser() if env else None


def weights_dirs() -> list[pathlib.Path]:
    """The local folders searched for weights, in order (see ``_pretrained``)."""
    mine = user_weights_dir()
    return [*([mine] if mine is not None else []), PACKAGE_WEIGHTS, weights_cache_dir()]


def refuse_link(path: pathlib.Path) -> None:
    """Refuse a symbolic link in the download cache, where zoo alone writes.

    Raises:
        ValueError: ``path`` is a symbolic link.
    """
    if path.is_symlink():
        raise ValueError(
            f"{path} is a symbolic link (to {os.readlink(path)}); zoo writes its "
            "download cache itself and follows no links in it. Delete the link, "
            "or put your own weights in ZOO_WEIGHTS_DIR."
        )


def read_card(path: pathlib.Path, *, name: str | None = None) -> ModelCard:
    """The card at ``path``, checked; if ``name`` is given, it must be its card.

    Raises:
        ValueError: the file is not a readable, valid card, or it is the card
            of another preset or dataset than ``name``.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read the model card {path}: {error}") from None
    card = ModelCard.from_json(data, source=f"The model card {path}")
    if name is not None and card_name(card.preset, card.dataset) != name:
        raise ValueError(
            f"The model card {path} is the card of {card.preset!r} on "
            f"{card.dataset!r}, not of {name!r}: rename or replace it."
        )
    return card


def pinned_sha256(name: str) -> str | None:
    """The SHA-256 zoo pins for the shipped weights ``name``, else ``None``.

    The pins are the cards installed with the package (``zoo/weights/``):
    weights named like shipped ones are checked against them wherever the
    file comes from, never against a downloaded card.
    """
    path = PACKAGE_WEIGHTS / f"{name}.json"
    return read_card(path, name=name).sha256 if path.is_file() else None


def available_weights(preset: str | None = None) -> list[tuple[str, str]]:
    """The ``(preset, dataset)`` pairs with a card in a local weights folder.

    Args:
        preset: only this preset's; ``None`` for all.

    Returns:
        Sorted pairs, each once (weights at ``$ZOO_WEIGHTS_URL`` are not
        listed until they are downloaded). Unreadable or invalid cards, and
        links in the download cache, are skipped.
    """
    found = set()
    cache = weights_cache_dir()
    for folder in weights_dirs():
        pattern = "*.json" if preset is None else f"{preset}-*.json"
        for path in folder.glob(pattern) if folder.is_dir() else ():
            if folder == cache and path.is_symlink():
                continue
            try:
                card = read_card(path, name=path.stem)
            except ValueError:
                continue
            found.add((card.preset, card.dataset))
    return sorted(found)
