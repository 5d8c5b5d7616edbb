"""The in-memory dataset every loader returns (its own module, below the loaders).

[`load_dataset`][zoo.data.load_dataset] dispatches to the loaders of
``_datasets`` and ``_cifar``, and both build an :class:`ArrayDataset`: it lives
here so that neither loader module imports the other's.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A labelled dataset held in memory as NumPy arrays.

    It is also a random-access record source: ``len(ds)`` and ``ds[i]`` make it
    usable as ``grain.MapDataset.source(ds)``.

    Attributes:
        inputs: the examples, shape ``(N, ...)``; images are ``(N, C, H, W)``.
        labels: integer class labels, ``int32``, shape ``(N,)``.
        class_names: one human-readable name per class, indexed by label.
        name: the dataset's name and split, e.g. ``"mnist/train"``.
    """

    inputs: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        if self.inputs.ndim < 1 or self.labels.shape != self.inputs.shape[:1]:
            raise ValueError(
                f"ArrayDataset {self.name!r}: labels have shape {self.labels.shape}, "
                f"expected ({self.inputs.shape[0] if self.inputs.ndim else 0},) "
                f"to match inputs of shape {self.inputs.shape}."
            )
        if self.labels.dtype != np.int32:
            raise ValueError(
                f"ArrayDataset {self.name!r}: labels must be int32, got "
                f"{self.labels.dtype}."
            )

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
        )

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """One example as a record ``{"inputs": x, "labels": y}``.

        Args:
            index: the example's position, ``0 <= index < len(self)``.

        Returns:
            ``inputs`` with the example's shape (e.g. ``(1, 28, 28)``) and
            ``labels`` as a 0-d ``int32`` array.
        """
        return {"inputs": self.inputs[index], "labels": self.labels[index]}

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, inputs={self.inputs.dtype}"
            f"{list(self.inputs.shape)}, labels={self.labels.dtype}"
            f"{list(self.labels.shape)}, classes={len(self.class_names)})"
        )
