"""REFERENCE: PyTorch eager training of zoo's CNN architectures; not part of zoo.

What a PyTorch user writes for the same network: ``nn.Sequential`` of
``Conv2d``, ``BatchNorm2d``, the activation and pooling per block, then
``Flatten``, ``Linear`` layers and ``Dropout``; ``torch.optim.Adam``;
``nn.CrossEntropyLoss``; the images one float32 tensor in memory, scaled once,
each epoch a ``torch.randperm`` and each batch an index into it. Built from a
zoo ``CNN``'s config, so the layers, widths, padding (output sizes), batch and
optimiser are the same; only the initial values differ.

PyTorch is optional (the ``bench`` dependency group): :func:`available` says
whether it is installed. Not a benchmark: it prints nothing when run.
"""

import importlib.util
import os
from typing import Any

import numpy as np


def available() -> bool:
    """Whether ``torch`` can be imported."""
    return importlib.util.find_spec("torch") is not None


def version() -> str | None:
    """``torch.__version__``, or ``None`` when torch is not installed."""
    if not available():
        return None
    import torch  # pyright: ignore[reportMissingImports] (the optional bench group)

    return str(torch.__version__)


def device_for(backend: str) -> str:
    """Where PyTorch should train to face JAX on ``backend``: ``"cuda"`` or ``"cpu"``.

    ``"cuda"`` when JAX runs on a GPU and this torch build sees one, so that the
    two contenders share the machine's accelerator; ``"cpu"`` otherwise.
    """
    if backend != "gpu" or not available():
        return "cpu"
    import torch  # pyright: ignore[reportMissingImports]

    return "cuda" if torch.cuda.is_available() else "cpu"


def jax_threads() -> int:
    """The CPU threads XLA:CPU uses: one per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _padding(size: int, kernel: int, stride: int, padding: Any) -> tuple[int, int]:
    """Torch ``Conv2d`` padding with zoo's output size, and any extra bottom/right pad.

    ``SAME`` is symmetric ``kernel // 2`` when that gives XLA's output size (a
    PyTorch user's choice), else the exact ``(low, high)`` split.
    """
    if padding == "VALID":
        return 0, 0
    if isinstance(padding, int):
        return padding, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    if (size + 2 * (kernel // 2) - kernel) // stride + 1 == out:
        return kernel // 2, 0
    return total // 2, total - 2 * (total // 2)


def torch_cnn(config: dict[str, Any]) -> Any:
    """``nn.Sequential`` with the architecture of a zoo ``CNN`` config."""
    import torch  # pyright: ignore[reportMissingImports]
    from torch import nn  # pyright: ignore[reportMissingImports]

    activations = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}
    act = activations[config.get("activation", "relu")]
    n = len(config["channels"])

    def per_block(key: str, default: Any) -> list[Any]:
        value = config.get(key, default)
        return list(value) if isinstance(value, list | tuple) else [value] * n

    kernels, strides = per_block("kernel_sizes", 3), per_block("strides", 1)
    paddings, pools = per_block("paddings", "SAME"), per_block("pool_sizes", 1)
    poolings = per_block("pooling", "max")
    batch_norm = config.get("batch_norm", True)
    use_bias = config.get("use_bias", True)
    layers: list[Any] = []
    cin, size = config["in_channels"], config["image_size"][0]
    for i, cout in enumerate(config["channels"]):
        pad, extra = _padding(size, kernels[i], strides[i], paddings[i])
        if extra:
            layers.append(nn.ZeroPad2d((0, extra, 0, extra)))
        layers.append(
            nn.Conv2d(
                cin,
                cout,
                kernels[i],
                stride=strides[i],
                padding=pad,
                bias=use_bias and not batch_norm,
            )
        )
        size = (size + 2 * pad + extra - kernels[i]) // strides[i] + 1
        if batch_norm:
            momentum = 1.0 - config.get("bn_momentum", 0.9)
            layers.append(nn.BatchNorm2d(cout, momentum=momentum))
        layers.append(act())
        if pools[i] > 1:
            pool = nn.MaxPool2d if poolings[i] == "max" else nn.AvgPool2d
            layers.append(pool(pools[i]))
            size //= pools[i]
        cin = cout
    layers.append(nn.Flatten())
    width = cin * size * size
    for hidden in config.get("hidden_sizes", []):
        layers += [nn.Linear(width, hidden, bias=use_bias), act()]
        if config.get("dropout", 0.0) > 0:
            layers.append(nn.Dropout(config["dropout"]))
        width = hidden
    layers.append(nn.Linear(width, config["out_size"], bias=use_bias))
    torch.manual_seed(0)
    return nn.Sequential(*layers)


class TorchLoop:
    """PyTorch eager training, tensors in memory, one optimiser step per batch."""

    def __init__(
        self,
        config: dict[str, Any],
        images: np.ndarray,
        labels: np.ndarray,
        *,
        learning_rate: float,
        batch_size: int,
        threads: int,
        device: str = "cpu",
    ) -> None:
        """``images`` uint8 ``(N, H, W)`` or ``(N, C, H, W)``; ``labels`` ``(N,)``.

        ``device`` (``"cpu"`` or ``"cuda"``) holds the model and the data.
        """
        import torch  # pyright: ignore[reportMissingImports]

        torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device)
        self.model = torch_cnn(config).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate)
        self.loss = torch.nn.CrossEntropyLoss()
        shape = (len(images), config["in_channels"], *config["image_size"])
        scaled = images.reshape(shape).astype(np.float32) / 255.0
        self.images = torch.from_numpy(scaled).to(self.device)
        self.labels = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        self.batch_size = batch_size

    def order(self, seed: int) -> Any:
        """A ``randperm`` of the training rows for ``seed``, on the loop's device."""
        generator = self.torch.Generator().manual_seed(seed)
        order = self.torch.randperm(len(self.labels), generator=generator)
        return order.to(self.device)

    def epoch(self, steps: int, seed: int) -> float:
        """Train ``steps`` batches of a shuffled epoch; return the last loss.

        Reading the loss waits for the device, so a timer around this call
        times the work on a GPU too.
        """
        order = self.order(seed)
        self.model.train()
        loss = self.torch.zeros(())
        for i in range(steps):
            rows = order[i * self.batch_size : (i + 1) * self.batch_size]
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss(self.model(self.images[rows]), self.labels[rows])
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())
