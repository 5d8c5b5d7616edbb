"""jaxtyping aliases shared across zoo.

Shapes are written the way the models see them: ONE unbatched example, images
channels-first. Batched forms carry a leading ``batch`` axis.
"""

from jaxtyping import Array, Bool, Float, Int, Shaped, UInt8

Image = Float[Array, "channels height width"]
"""One image, channels-first, floating point (usually scaled to ``[0, 1]``)."""

Features = Float[Array, " in_size"]
"""One flat feature vector."""

Logits = Float[Array, " classes"]
"""Unnormalised class scores for one example."""

BatchImages = Shaped[Array, "batch channels height width"]
"""A batch of images, ``uint8`` (scaled on device) or floating point."""

BatchInputs = Shaped[Array, "batch ..."]
"""A batch of model inputs of any trailing shape."""

BatchLogits = Float[Array, "batch classes"]
Labels = Int[Array, " batch"]
"""Integer class labels, one per example."""

Mask = Bool[Array, " batch"]
"""``True`` where a batch row is a real example, ``False`` where it is padding."""

Scalar = Float[Array, ""]
ImageU8 = UInt8[Array, "channels height width"]

__all__ = [
    "BatchImages",
    "BatchInputs",
    "BatchLogits",
    "Features",
    "Image",
    "ImageU8",
    "Labels",
    "Logits",
    "Mask",
    "Scalar",
]
