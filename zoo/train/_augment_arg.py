"""``fit``'s ``augment`` argument: what it may be, and what it may change.

``fit`` trains on examples of the training set's shape and dtype: it compiles
the step for them and re-estimates BatchNorm statistics on the training set.
An augmentation must keep both. A device augmentation states its output
shape; a Grain transform (run on the host, batch by batch) shows it only when
run, so ``fit`` runs it once on the first two examples, before anything is
compiled or written.
"""

import grain
import numpy as np

from ..data import AbstractDeviceAugment, ArrayDataset


def check_augment(augment: object, data: ArrayDataset) -> None:
    """Refuse an ``augment`` that is neither a device augmentation nor a Grain
    ``RandomMap`` (``TypeError``), or that changes the training examples'
    shape or dtype (``ValueError``, saying how to keep them)."""
    if augment is None:
        return
    if not isinstance(augment, AbstractDeviceAugment | grain.transforms.RandomMap):
        hint = ""
        if isinstance(augment, type):
            hint = f" (the class itself: build one, e.g. {augment.__name__}(...))"
        raise TypeError(
            "augment takes a device augmentation (zoo.data.DeviceShift(2), ...) "
            "or a Grain RandomMap over whole batches (zoo.data.RandomShift(2), "
            f"...), got {augment!r}{hint}."
        )
    before = (tuple(data.inputs.shape[1:]), data.inputs.dtype)
    after = _augmented(augment, data)
    if after != before:
        raise ValueError(
            f"augment={type(augment).__name__} turns training examples of shape "
            f"{before[0]} and dtype {before[1]} into {after[0]} and {after[1]}, "
            "but fit trains on examples as the training set holds them (it "
            "compiles the step and re-estimates BatchNorm for them). Keep the "
            "shape and dtype (a crop with padding and no size crops back to the "
            "image's size), or reshape the training set to the model's input "
            "first."
        )


def _augmented(augment: object, data: ArrayDataset) -> tuple[tuple[int, ...], object]:
    """One augmented example's shape and dtype."""
    if isinstance(augment, AbstractDeviceAugment):
        shape = tuple(data.inputs.shape[1:])
        if len(shape) == 3:  # images (C, H, W), as device augmentations take
            shape = tuple(augment.output_shape((shape[0], shape[1], shape[2])))
        return shape, data.inputs.dtype
    rows = min(2, len(data))
    record = {
        "inputs": np.array(data.inputs[:rows]),
        "labels": np.array(data.labels[:rows]),
        "mask": np.ones(rows, np.bool_),
    }
    if data.targets is not None:
        record["targets"] = np.array(data.targets[:rows])
    assert isinstance(augment, grain.transforms.RandomMap)
    out = augment.random_map(record, np.random.default_rng(0))
    if not isinstance(out, dict) or "inputs" not in out:
        raise TypeError(
            f"augment={type(augment).__name__}: its random_map(batch, rng) must "
            "return the batch, a dict with 'inputs', 'labels' and 'mask', got "
            f"{type(out).__name__}."
        )
    inputs = np.asarray(out["inputs"])
    return tuple(inputs.shape[1:]), inputs.dtype
