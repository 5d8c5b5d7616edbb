"""What ``fit`` and ``evaluate`` take as data: a dataset, or ``(x, y)`` arrays."""

from ..data import ArrayDataset

_THE_LINE = "zoo.data.ArrayDataset(x, y)"


def as_dataset(value: object, name: str) -> ArrayDataset:
    """``value`` as an :class:`~zoo.data.ArrayDataset`.

    A dataset passes through; a tuple ``(x, y)`` of NumPy or JAX arrays becomes
    ``ArrayDataset(x, y, name=name)`` (labels of any integer dtype that fits
    in ``int32``). Anything else is refused, not guessed at: a tuple taken for
    a dataset of two examples would train on nonsense.

    Args:
        value: what the caller passed.
        name: the argument's name, for messages (``"train_data"``, ...).

    Returns:
        The dataset.

    Raises:
        TypeError: ``value`` is neither a dataset nor ``(x, y)`` arrays; the
            message shows the one line that works.
    """
    if isinstance(value, ArrayDataset):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        x, y = value
        if all(hasattr(a, "__array__") and hasattr(a, "shape") for a in (x, y)):
            return ArrayDataset(x, y, name=name)
        got = f"a tuple of ({type(x).__name__}, {type(y).__name__})"
    elif isinstance(value, tuple):
        got = f"a tuple of {len(value)} item{'' if len(value) == 1 else 's'}"
    elif isinstance(value, list):
        got = f"a list of {len(value)} (a pair is the tuple (x, y), not a list)"
    elif hasattr(value, "__array__"):
        got = "an array alone (no labels)"
    else:
        got = type(value).__name__
    raise TypeError(
        f"{name} must be a zoo.data.ArrayDataset or a tuple (x, y) of NumPy or "
        f"JAX arrays (the examples and their integer labels), got {got}. Build "
        f"one with: {name} = {_THE_LINE}"
    )
