"""Loss modules built on segfast ops."""

import torch
from torch import nn

from segfast.ops.ohem import ohem_cross_entropy


class OHEMCrossEntropyLoss(nn.Module):
    """Cross-entropy under online hard example mining, with mmseg's OHEMPixelSampler rules
    (see segfast.ops.ohem). `loss_weight` scales the result, as mmseg's loss modules do."""

    def __init__(
        self,
        thresh: float | None = None,
        min_kept: int = 100000,
        ignore_index: int = 255,
        reduction: str = "mean",
        avg_non_ignore: bool = False,
        class_weight=None,
        loss_weight: float = 1.0,
    ):
        super().__init__()
        self.thresh, self.min_kept, self.ignore_index = thresh, min_kept, ignore_index
        self.reduction, self.avg_non_ignore, self.loss_weight = reduction, avg_non_ignore, loss_weight
        self.register_buffer(
            "class_weight", None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * ohem_cross_entropy(
            logits,
            target,
            thresh=self.thresh,
            min_kept=self.min_kept,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            avg_non_ignore=self.avg_non_ignore,
            class_weight=self.class_weight,
        )

    def extra_repr(self) -> str:
        return (
            f"thresh={self.thresh}, min_kept={self.min_kept}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}, avg_non_ignore={self.avg_non_ignore}"
        )


def mask_bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """LISA's sigmoid_ce_loss per mask: (N, H, W) logits and {0, 1} targets -> (N,) mean
    binary cross-entropy over each mask's pixels."""
    return (
        nn.functional.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
        .flatten(1)
        .mean(1)
    )


def mask_dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, scale: float = 1000.0, eps: float = 1e-6
) -> torch.Tensor:
    """LISA's dice_loss per mask: (N,) 1 - (2 Σ p·t + eps) / (Σ p + Σ t + eps) with p = sigmoid,
    every sum taken over pixels scaled by 1/scale (which keeps it finite in fp16 and makes eps
    matter only for empty masks)."""
    p = torch.sigmoid(logits).flatten(1) / scale
    t = targets.to(p.dtype).flatten(1)
    return 1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) / scale + eps)


def framed_mask_losses(logits: list, targets: list, valid_size: torch.Tensor) -> tuple:
    """(BCE (N,), DICE (N,)) of every mask of a batch in SAM's padded frame, each taken on its
    image's unpadded (h, w) region: logits and targets are per sample (n_b, S, S)."""
    bce, dice = [], []
    for b, (pred, gt) in enumerate(zip(logits, targets)):
        h, w = (int(x) for x in valid_size[b])
        if len(pred):
            bce.append(mask_bce_loss(pred[:, :h, :w], gt[:, :h, :w]))
            dice.append(mask_dice_loss(pred[:, :h, :w], gt[:, :h, :w]))
    if not bce:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(bce), torch.cat(dice)
