"""Where each tensor of timm's ``vit_*`` ``state_dict`` goes in a [`ViT`][zoo.ViT]."""

import equinox as eqx

from ._timm_layout import TimmTensor, linear as weight_and_bias, tensor
from ._vit import ViT


def vit_layout(model: ViT) -> list[TimmTensor]:
    """timm's ``vit_*`` keys for a [`ViT`][zoo.ViT]'s arrays.

    ``cls_token`` ``(1, 1, dim)`` and ``pos_embed`` ``(1, tokens, dim)`` lose
    their leading ones; ``patch_embed.proj`` is the patch convolution (its
    bias becomes Equinox's ``(dim, 1, 1)``); block ``i`` is ``blocks.{i}``
    with ``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1`` and
    ``mlp.fc2``; ``norm`` is the final LayerNorm and ``head`` the classifier,
    absent with ``out_size=0``. Linear weights are ``(out, in)`` in both.
    With ``pool="avg"`` there is no ``cls_token`` and the final LayerNorm is
    timm's ``fc_norm`` (applied after pooling).
    """
    if model.stem != "patch":
        raise ValueError(
            f"timm's vit_* models embed patches with one convolution; a ViT "
            f"with stem={model.stem!r} has no timm layout. Build it with "
            "stem='patch' to load or export timm weights."
        )
    dim = model.dim
    layout = []
    if model.cls_token is not None:
        layout.append(TimmTensor("cls_token", ("cls_token",), lambda a: a.reshape(dim)))
    layout += [
        TimmTensor("pos_embed", ("pos_embed",), lambda a: a.reshape(-1, dim)),
        tensor("patch_embed.proj.weight", "patch_embed.weight"),
        TimmTensor(
            "patch_embed.proj.bias",
            ("patch_embed.bias",),
            lambda a: a.reshape(dim, 1, 1),
        ),
    ]
    for i in range(model.depth):
        timm, zoo = f"blocks.{i}", f"blocks[{i}]"
        layout += [
            *weight_and_bias(f"{timm}.norm1", f"{zoo}.norm1"),
            *weight_and_bias(f"{timm}.attn.qkv", f"{zoo}.attn.qkv"),
            *weight_and_bias(f"{timm}.attn.proj", f"{zoo}.attn.proj"),
            *weight_and_bias(f"{timm}.norm2", f"{zoo}.norm2"),
            *weight_and_bias(f"{timm}.mlp.fc1", f"{zoo}.fc1"),
            *weight_and_bias(f"{timm}.mlp.fc2", f"{zoo}.fc2"),
        ]
    layout += weight_and_bias("norm" if model.pool == "token" else "fc_norm", "norm")
    if isinstance(model.output, eqx.nn.Linear):
        layout += weight_and_bias("head", "output")
    return layout
