"""The in-memory dataset every loader returns (its own module, below the loaders).

[`load_dataset`][zoo.data.load_dataset] dispatches to the loaders of
``_datasets`` and ``_cifar``, and both build an :class:`ArrayDataset`: it lives
here so that neither loader module imports the other's.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

_INT32 = np.iinfo(np.int32)


@dataclasses.dataclass(frozen=True, eq=False, init=False)
class ArrayDataset:
    """A labelled dataset held in memory as NumPy arrays.

    Your own data is one line: ``zoo.data.ArrayDataset(x, y)``, with ``x`` the
    examples and ``y`` their integer labels (NumPy or JAX arrays).

    It is also a random-access record source: ``len(ds)`` and ``ds[i]`` make it
    usable as ``grain.MapDataset.source(ds)``.

    Attributes:
        inputs: the examples, shape ``(N, ...)``; images are ``(N, C, H, W)``.
        labels: integer class labels, ``int32``, shape ``(N,)``.
        class_names: one human-readable name per class, indexed by label.
        name: the dataset's name and split, e.g. ``"mnist/train"``.
        targets: ``None``, or a float32 row per example ``(N, T)`` that a
            [`TargetLoss`][zoo.train.TargetLoss] receives beside the labels:
            e.g. a teacher's logits, for [`distillation`][zoo.train.distillation].

    Example:
        >>> import numpy as np
        >>> ds = ArrayDataset(np.zeros((4, 2), np.float32), np.array([0, 2, 1, 2]))
        >>> ds.labels.dtype, ds.class_names, ds.name
        (dtype('int32'), ('0', '1', '2'), 'arrays')
    """

    inputs: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str
    targets: np.ndarray | None

    def __init__(
        self,
        inputs: Any,
        labels: Any,
        class_names: Sequence[str] | None = None,
        name: str = "arrays",
        *,
        targets: Any = None,
    ) -> None:
        """Check and hold ``inputs`` and ``labels``.

        Args:
            inputs: the examples, a NumPy or JAX array of shape ``(N, ...)``
                (JAX arrays are copied to the host).
            labels: their class labels, shape ``(N,)``, of any integer dtype
                whose values fit in ``int32`` (sklearn's ``int64`` included);
                held as ``int32``.
            class_names: one name per class, indexed by label; by default
                ``"0"``, ``"1"``, ... up to the largest label.
            name: the dataset's name in messages and records (``"arrays"``).
            targets: optional float rows ``(N, T)``, one per example, all
                finite (e.g. a teacher's logits); held as float32.

        Raises:
            TypeError: ``inputs`` or ``labels`` is not an array, ``labels``
                are not integers, or ``class_names``/``name`` are not strings.
            ValueError: ``labels`` do not have shape ``(N,)`` or do not fit in
                ``int32``; floating-point ``inputs`` hold a NaN or an infinity;
                ``targets`` are not ``(N, T)`` or not all finite.
        """
        if not isinstance(name, str):
            raise TypeError(f"ArrayDataset: name must be a str, got {name!r}.")
        inputs = _as_array(inputs, "inputs", name)
        labels = _as_labels(_as_array(labels, "labels", name), inputs, name)
        _check_finite_inputs(inputs, name)
        if class_names is None:
            count = int(labels.max()) + 1 if labels.size else 0
            class_names = tuple(str(i) for i in range(max(count, 0)))
        elif isinstance(class_names, str) or not all(
            isinstance(c, str) for c in class_names
        ):
            raise TypeError(
                f"ArrayDataset {name!r}: class_names must be a sequence of str "
                f"(one per class), got {class_names!r}."
            )
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "class_names", tuple(class_names))
        object.__setattr__(self, "name", name)
        if targets is not None:
            targets = _as_targets(_as_array(targets, "targets", name), labels, name)
        object.__setattr__(self, "targets", targets)

    def __len__(self) -> int:
        """The number of examples."""
        return int(self.labels.shape[0])

    def take(self, n: int) -> "ArrayDataset":
        """The first ``n`` examples, as a dataset (views, no copy).

        Raises:
            ValueError: ``n`` is not in ``[1, len(self)]``.
        """
        if not 1 <= n <= len(self):
            raise ValueError(f"take({n}) needs 1 <= n <= {len(self)} for {self.name}.")
        return dataclasses.replace(
            self,
            inputs=self.inputs[:n],
            labels=self.labels[:n],
            name=f"{self.name}[:{n}]",
            targets=None if self.targets is None else self.targets[:n],
        )

    def with_targets(self, targets: Any) -> "ArrayDataset":
        """This dataset with a float row per example ``(N, T)`` (see ``targets``)."""
        return ArrayDataset(
            self.inputs, self.labels, self.class_names, self.name, targets=targets
        )

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """One example as a record ``{"inputs": x, "labels": y}``.

        Args:
            index: the example's position, ``0 <= index < len(self)``.

        Returns:
            ``inputs`` with the example's shape (e.g. ``(1, 28, 28)``) and
            ``labels`` as a 0-d ``int32`` array; ``targets`` ``(T,)`` too if
            the dataset has them.
        """
        record = {"inputs": self.inputs[index], "labels": self.labels[index]}
        if self.targets is not None:
            record["targets"] = self.targets[index]
        return record

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, inputs={self.inputs.dtype}"
            f"{list(self.inputs.shape)}, labels={self.labels.dtype}"
            f"{list(self.labels.shape)}, classes={len(self.class_names)}"
            + ("" if self.targets is None else f", targets={list(self.targets.shape)}")
            + ")"
        )


def _as_array(value: Any, what: str, name: str) -> np.ndarray:
    """``value`` as a NumPy array, if it is an array (NumPy, JAX, ...) at all."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__array__") and hasattr(value, "shape"):
        return np.asarray(value)  # a JAX (or other) array: a host copy
    raise TypeError(
        f"ArrayDataset {name!r}: {what} must be a NumPy or JAX array, got "
        f"{type(value).__name__}: convert it with np.asarray(...)."
    )


def _check_finite_inputs(inputs: np.ndarray, name: str) -> None:
    """Refuse floating-point inputs with a NaN or an infinity, naming the rows:
    trained on, they make every weight NaN; evaluated, a wrong count."""
    if not np.issubdtype(inputs.dtype, np.inexact) or np.isfinite(inputs).all():
        return
    rows = np.flatnonzero(~np.isfinite(inputs.reshape(len(inputs), -1)).all(axis=1))
    axes = 1 if inputs.ndim == 2 else tuple(range(1, inputs.ndim))
    raise ValueError(
        f"ArrayDataset {name!r}: inputs of {rows.size} example(s) hold a NaN or "
        f"an infinity (first: example {rows[0]}). Drop or repair them first, "
        f"e.g. keep = np.isfinite(x).all(axis={axes}); x, y = x[keep], y[keep]."
    )


def _as_labels(labels: np.ndarray, inputs: np.ndarray, name: str) -> np.ndarray:
    """``labels`` checked against ``inputs`` and held as ``int32``."""
    if inputs.ndim < 1 or labels.shape != inputs.shape[:1]:
        expected = f"({inputs.shape[0]},)" if inputs.ndim else "(N,) (inputs are 0-d)"
        hint = (
            " One-hot labels? Pass y.argmax(axis=1)."
            if labels.ndim == 2 and inputs.ndim and labels.shape[0] == inputs.shape[0]
            else ""
        )
        raise ValueError(
            f"ArrayDataset {name!r}: labels have shape {labels.shape}, expected "
            f"{expected} to match inputs of shape {inputs.shape}: one integer "
            f"class label per example.{hint}"
        )
    if labels.dtype == np.int32:
        return labels
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(
            f"ArrayDataset {name!r}: labels must be integer class indices, got "
            f"dtype {labels.dtype}: convert whole-number labels with "
            "y.astype(np.int32), or map class names to 0..K-1 first (for "
            "instance with np.unique(y, return_inverse=True))."
        )
    if labels.size and (labels.min() < _INT32.min or labels.max() > _INT32.max):
        raise ValueError(
            f"ArrayDataset {name!r}: labels in [{labels.min()}, {labels.max()}] "
            f"do not fit in int32: number the classes 0..K-1 first (for "
            "instance with np.unique(y, return_inverse=True))."
        )
    return labels.astype(np.int32)


def _as_targets(targets: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
    """``targets`` checked to be a finite float row per example, held as float32."""
    if targets.ndim != 2 or targets.shape[0] != labels.shape[0]:
        raise ValueError(
            f"ArrayDataset {name!r}: targets have shape {targets.shape}, expected "
            f"({labels.shape[0]}, T): one row of T floats per example (for "
            "distillation, the teacher's logits, (N, classes))."
        )
    if not np.issubdtype(targets.dtype, np.floating):
        raise TypeError(
            f"ArrayDataset {name!r}: targets must be floating point, got dtype "
            f"{targets.dtype}: for hard labels use labels; convert float rows "
            "with targets.astype(np.float32)."
        )
    targets = targets.astype(np.float32, copy=False)
    if not np.isfinite(targets).all():
        rows = np.flatnonzero(~np.isfinite(targets).all(axis=1))
        raise ValueError(
            f"ArrayDataset {name!r}: targets of {rows.size} examples are not "
            f"finite (first: example {rows[0]}); every target must be a finite "
            "float."
        )
    return targets
