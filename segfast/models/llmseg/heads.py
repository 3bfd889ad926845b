"""LLM-Seg's selection heads: the similarity of the IoU head, the losses of its equations (1)
and (3), and the selection strategies of its Table 3. Every function works on rows (one row per
conversation: its image's proposals, padded, `valid` saying which are real) and returns one value
per row; the model averages them as the authors do (over an image's conversations, then over
images)."""

import torch
import torch.nn.functional as F
from torch import nn

SELECTIONS = ("top1_iou", "iop_threshold", "top1_iou+iop_threshold", "top5_iou_iop_threshold")
KL_DIRECTIONS = ("gt||pred", "pred||gt")


def mlp(sizes: list, sigmoid: bool = False) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (and a final sigmoid)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers, *([nn.Sigmoid()] if sigmoid else []))


def similarity(proposals: torch.Tensor, seg: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """P·s per proposal, (N, K). The paper writes a dot product; the authors' code normalises
    both embeddings first (cosine similarity), which keeps P·s/τ in [-20, 20] at τ = 0.05 — the
    default here."""
    if normalize:
        proposals, seg = F.normalize(proposals, dim=-1), F.normalize(seg, dim=-1)
    return torch.einsum("nkd,nd->nk", proposals, seg)


def iou_alignment_loss(
    scores: torch.Tensor, gt_iou: torch.Tensor, valid: torch.Tensor, tau: float = 0.05, direction: str = "gt||pred"
) -> torch.Tensor:
    """Equation (1) per row, summed over its valid proposals: with p = softmax(P·s/τ) and
    q = softmax(I/τ), "gt||pred" is KL(q ‖ p) = Σ q (log q - log p), what the authors' code
    computes (F.kl_div(p.log(), q, reduction="sum")); "pred||gt" is KL(p ‖ q)."""
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"kl must be one of {', '.join(KL_DIRECTIONS)}, got {direction!r}")
    neg = torch.finfo(scores.dtype).min
    log_p = F.log_softmax((scores / tau).masked_fill(~valid, neg), dim=-1)
    log_q = F.log_softmax((gt_iou.to(scores.dtype) / tau).masked_fill(~valid, neg), dim=-1)
    if direction == "pred||gt":
        log_p, log_q = log_q, log_p
    return (log_q.exp() * (log_q - log_p)).masked_fill(~valid, 0.0).sum(-1)


def iop_loss(pred: torch.Tensor, gt_iop: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Equation (3) per row: the mean over its valid proposals of exp(g - 1) (p - g)^2, the
    weight favouring proposals inside the target (the authors' iou_regression_loss before its
    ×50, which is λ_iop here)."""
    g = gt_iop.to(pred.dtype)
    per = (torch.exp(g - 1) * (pred - g) ** 2).masked_fill(~valid, 0.0)
    return per.sum(-1) / valid.sum(-1).clamp(min=1)


def select(
    scores: torch.Tensor | None,
    iop: torch.Tensor | None,
    valid: torch.Tensor,
    strategy: str = "iop_threshold",
    iop_threshold: float = 0.5,
) -> torch.Tensor:
    """(N, K) bool: which proposals form each row's mask (their union).

    top1_iou                 the proposal most similar to [SEG]
    iop_threshold            every proposal with predicted IoP > threshold (the paper's default)
    top1_iou+iop_threshold   both of the above
    top5_iou_iop_threshold   among the 5 most similar, those with IoP > threshold; none passing
                             gives an empty mask (the authors' validate_threshold_from_topIoU)
    """
    if strategy not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {strategy!r}")
    if "iou" in strategy and scores is None:
        raise ValueError(f"selection {strategy!r} needs the IoU head (model.options.heads)")
    if "iop" in strategy and iop is None:
        raise ValueError(f"selection {strategy!r} needs the IoP head (model.options.heads)")
    if strategy == "iop_threshold":
        return (iop > iop_threshold) & valid
    scores = scores.masked_fill(~valid, float("-inf"))
    top1 = F.one_hot(scores.argmax(-1), scores.shape[-1]).bool() & valid
    if strategy == "top1_iou":
        return top1
    above = (iop > iop_threshold) & valid
    if strategy == "top1_iou+iop_threshold":
        return top1 | above
    k = min(5, scores.shape[-1])
    top5 = torch.zeros_like(valid).scatter(-1, scores.topk(k, dim=-1).indices, True) & valid
    return top5 & above
