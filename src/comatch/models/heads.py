"""CoMatch network: an encoder with a classification head and a projection head.

CoMatch (Li, Xiong, Hoi, ICCV 2021) attaches two heads to a shared encoder:

* a linear classifier producing class logits, used for pseudo-labelling and
  the supervised / unsupervised cross-entropy losses;
* a non-linear projector (fc - LeakyReLU(0.1) - fc, or fc - ReLU - fc as in the
  released ImageNet code) producing low-dimensional L2-normalised embeddings, used
  for the graph-based contrastive loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HEAD_ACTIVATIONS", "CoMatchNet"]

HEAD_ACTIVATIONS = ("leaky_relu", "relu")
"""Non-linearities the projection head can use between its two layers."""


def _activation(name: str) -> nn.Module:
    """The projection head's non-linearity: LeakyReLU (slope 0.1) or ReLU.

    Raises:
        ValueError: If ``name`` is not in :data:`HEAD_ACTIVATIONS`.
    """
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"head activation must be one of {HEAD_ACTIVATIONS}, got {name!r}")


def _init_linear(layer: nn.Linear) -> None:
    """Initialise a linear layer with Xavier-normal weights and zero bias.

    Args:
        layer: The layer to initialise in place.
    """
    nn.init.xavier_normal_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class CoMatchNet(nn.Module):
    """Encoder + classifier + projection head.

    Args:
        encoder: Module mapping images ``[N, C, H, W]`` to features
            ``[N, feature_dim]``.
        feature_dim: Dimension of the encoder output.
        num_classes: Number of classes of the classifier head.
        proj_dim: Dimension of the (L2-normalised) embedding ``z``.
        head_activation: Projector non-linearity, one of :data:`HEAD_ACTIVATIONS`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        num_classes: int,
        proj_dim: int = 64,
        head_activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        if feature_dim <= 0 or num_classes <= 0 or proj_dim <= 0:
            raise ValueError(
                "feature_dim, num_classes and proj_dim must be positive, got "
                f"{feature_dim}, {num_classes}, {proj_dim}"
            )
        self.encoder = encoder
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.proj_dim = proj_dim
        self.classifier = nn.Linear(feature_dim, num_classes)
        self.projector = nn.Sequential(
            nn.Linear(feature_dim, feature_dim),
            _activation(head_activation),
            nn.Linear(feature_dim, proj_dim),
        )
        _init_linear(self.classifier)
        for layer in self.projector:
            if isinstance(layer, nn.Linear):
                _init_linear(layer)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            x: Images ``[N, C, H, W]``.

        Returns:
            Encoder features ``[N, feature_dim]``.
        """
        return self.encoder(x)

    def heads(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply both heads to precomputed encoder features.

        Args:
            feats: Encoder features ``[N, feature_dim]``.

        Returns:
            ``(logits [N, num_classes], z [N, proj_dim])`` with unit-norm rows of ``z``.
        """
        logits = self.classifier(feats)  # [N, num_classes]
        z = F.normalize(self.projector(feats), dim=1)  # [N, proj_dim], ||z_i|| = 1
        return logits, z

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute class logits and normalised embeddings.

        Args:
            x: Images ``[N, C, H, W]``.

        Returns:
            ``(logits [N, num_classes], z [N, proj_dim])`` with unit-norm rows of ``z``.
        """
        return self.heads(self.features(x))
