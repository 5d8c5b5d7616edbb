"""Where each tensor of a timm ``state_dict`` goes in a zoo model.

A family's layout is an explicit list of :class:`TimmTensor`: one per timm
key, naming the zoo arrays it fills by their names in a weight file
(``_safetensors.named_arrays``: ``"blocks[0].conv1.weight"``, or
``"state:..."`` for BatchNorm's running statistics). Nothing is matched by
similarity: a key the layout does not list is a leftover, and the loader
(``_timm.load_timm_weights``) refuses the file.

This module is below the registry and every family but ``ResNet`` (whose
layout is here), so a family's module may import it for its own layout.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import equinox as eqx
import numpy as np

from ._resnet import ResNet
from ._resnet_blocks import Bottleneck

STATE_PREFIX = "state:"
"""``_safetensors.STATE_PREFIX``, written out: importing ``_safetensors`` (and
so the registry) here would make a cycle of any family module importing this."""


@dataclasses.dataclass(frozen=True)
class TimmTensor:
    """One tensor of a timm ``state_dict`` and the zoo arrays it fills.

    Attributes:
        key: its timm key, e.g. ``"layer1.0.conv1.weight"``.
        targets: the names of the zoo arrays it fills (as in a zoo weight
            file), e.g. ``("blocks[0].conv1.weight",)``; empty for a tensor
            zoo knows and does not use (BatchNorm's ``num_batches_tracked``).
        convert: maps the timm array to the target arrays: one array for one
            target, a tuple of one per target for several; ``None``: the
            array itself, for one target.
    """

    key: str
    targets: tuple[str, ...]
    convert: Callable[[np.ndarray], Any] | None = None

    def arrays(self, value: np.ndarray) -> tuple[np.ndarray, ...]:
        """The arrays for :attr:`targets`, from the timm tensor ``value``."""
        if self.convert is None:
            return (value,) * len(self.targets)
        out = self.convert(value)
        return tuple(out) if isinstance(out, tuple | list) else (out,)


def tensor(key: str, target: str) -> TimmTensor:
    """A timm tensor that is one zoo array as it is."""
    return TimmTensor(key, (target,))


def unused(key: str) -> TimmTensor:
    """A timm tensor zoo knows and leaves out."""
    return TimmTensor(key, ())


def batch_norm(timm: str, zoo: str) -> list[TimmTensor]:
    """A ``torch.nn.BatchNorm2d`` at ``timm`` as the ``eqx.nn.BatchNorm`` at ``zoo``.

    The scale and shift are parameters; the running mean and variance go into
    the ``eqx.nn.State`` (``batch_state_index``); ``num_batches_tracked`` is
    left out (the loader settles the counter, see ``_timm``).
    """
    return [
        tensor(f"{timm}.weight", f"{zoo}.weight"),
        tensor(f"{timm}.bias", f"{zoo}.bias"),
        tensor(f"{timm}.running_mean", f"{STATE_PREFIX}{zoo}.batch_state_index[0]"),
        tensor(f"{timm}.running_var", f"{STATE_PREFIX}{zoo}.batch_state_index[1]"),
        unused(f"{timm}.num_batches_tracked"),
    ]


def linear(timm: str, zoo: str) -> list[TimmTensor]:
    """A ``torch.nn.Linear`` with bias as an ``eqx.nn.Linear``: both keep
    their weight as ``(out, in)``."""
    return [
        tensor(f"{timm}.weight", f"{zoo}.weight"),
        tensor(f"{timm}.bias", f"{zoo}.bias"),
    ]


def resnet_layout(model: ResNet) -> list[TimmTensor]:
    """timm's ``resnet*`` keys for a [`ResNet`][zoo.ResNet]'s arrays.

    ``conv1``/``bn1`` are the stem; block ``j`` of stage ``i`` is
    ``layer{i+1}.{j}`` with ``conv1..3``/``bn1..3`` and its projection
    ``downsample.0`` (1x1 conv) and ``downsample.1`` (BatchNorm); ``fc`` is the
    classifier, absent with ``out_size=0``. PyTorch's ``(out, in, kh, kw)``
    kernels are Equinox's as they are.
    """
    layout = [tensor("conv1.weight", "stem.weight"), *batch_norm("bn1", "stem_norm")]
    index = 0
    for stage, depth in enumerate(model.depths):
        for j in range(depth):
            block = model.blocks[index]
            timm, zoo = f"layer{stage + 1}.{j}", f"blocks[{index}]"
            convs = 3 if isinstance(block, Bottleneck) else 2
            for c in range(1, convs + 1):
                layout.append(tensor(f"{timm}.conv{c}.weight", f"{zoo}.conv{c}.weight"))
                layout += batch_norm(f"{timm}.bn{c}", f"{zoo}.norm{c}")
            if block.shortcut is not None:
                layout.append(
                    tensor(f"{timm}.downsample.0.weight", f"{zoo}.shortcut.conv.weight")
                )
                layout += batch_norm(f"{timm}.downsample.1", f"{zoo}.shortcut.norm")
            index += 1
    if isinstance(model.output, eqx.nn.Linear):
        layout += linear("fc", "output")
    return layout
