"""LLM-Seg's mask-selection side: fusion of proposal embeddings with the [SEG] token, the two
heads, the losses of its equations (1) and (3), and the selection strategies of its Table 3."""

import torch
import torch.nn.functional as F
from torch import nn

SELECTIONS = ("top1_iou", "iop_threshold", "top1_iou+iop_threshold", "top5_iou_iop_threshold")


class Fusion(nn.Module):
    """Two-way attention blocks (segment-anything's) between the [SEG] token (queries) and the
    proposal embeddings (keys): each attends to the other, both come out updated."""

    def __init__(self, dim: int = 256, heads: int = 8, blocks: int = 2, mlp_dim: int = 1024):
        super().__init__()
        from segment_anything.modeling.transformer import TwoWayAttentionBlock

        self.blocks = nn.ModuleList(
            TwoWayAttentionBlock(dim, heads, mlp_dim, skip_first_layer_pe=i == 0) for i in range(blocks)
        )

    def forward(self, seg: torch.Tensor, proposals: torch.Tensor):
        """seg (B, D), proposals (B, K, D) -> the same, updated. Padded proposals must be zero
        embeddings (mask pooling of an empty mask gives 0); they take part in attention, which
        the selection and losses then mask out."""
        queries, keys = seg[:, None], proposals
        zeros_q, zeros_k = torch.zeros_like(queries), torch.zeros_like(keys)
        for block in self.blocks:
            queries, keys = block(queries, keys, zeros_q, zeros_k)
        return queries[:, 0], keys


def mlp(sizes: list) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def similarity(proposals: torch.Tensor, seg: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """P·s per proposal, (B, K). The paper writes a dot product; the authors' code normalises
    both embeddings first (cosine similarity), which keeps P·s/τ in [-20, 20] at τ = 0.05 — the
    default here."""
    if normalize:
        proposals, seg = F.normalize(proposals, dim=-1), F.normalize(seg, dim=-1)
    return torch.einsum("bkd,bd->bk", proposals, seg)


def iou_alignment_loss(scores: torch.Tensor, gt_iou: torch.Tensor, valid: torch.Tensor, tau: float = 0.05):
    """Equation (1): KL(softmax(P·s/τ) ‖ softmax(I/τ)) over each image's valid proposals,
    summed over proposals, averaged over images."""
    neg = torch.finfo(scores.dtype).min
    log_p = F.log_softmax((scores / tau).masked_fill(~valid, neg), dim=-1)
    log_q = F.log_softmax((gt_iou.to(scores.dtype) / tau).masked_fill(~valid, neg), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).masked_fill(~valid, 0.0)
    return kl.sum(-1).mean()


def iop_loss(pred: torch.Tensor, gt_iop: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Equation (3): mean over valid proposals of exp(g - 1) * (p - g)^2 (weights favour
    proposals inside the target)."""
    g = gt_iop.to(pred.dtype)
    per = torch.exp(g - 1) * (pred - g) ** 2
    return per[valid].mean() if valid.any() else pred.sum() * 0


def select(
    scores: torch.Tensor, iop: torch.Tensor, valid: torch.Tensor, strategy: str = "top1_iou", iop_threshold: float = 0.5
) -> torch.Tensor:
    """(B, K) bool: which proposals form each image's mask (their union).

    top1_iou                 the proposal most similar to [SEG]
    iop_threshold            every proposal with predicted IoP > threshold
    top1_iou+iop_threshold   both of the above
    top5_iou_iop_threshold   among the 5 most similar, those with IoP > threshold (the top-1 if none)
    """
    if strategy not in SELECTIONS:
        raise ValueError(f"strategy must be one of {', '.join(SELECTIONS)}, got {strategy!r}")
    scores = scores.masked_fill(~valid, float("-inf"))
    top1 = F.one_hot(scores.argmax(-1), scores.shape[-1]).bool() & valid
    above = (iop > iop_threshold) & valid
    if strategy == "top1_iou":
        return top1
    if strategy == "iop_threshold":
        return above
    if strategy == "top1_iou+iop_threshold":
        return top1 | above
    k = min(5, scores.shape[-1])
    top5 = torch.zeros_like(valid).scatter(-1, scores.topk(k, dim=-1).indices, True) & valid
    chosen = top5 & above
    return torch.where(chosen.any(-1, keepdim=True), chosen, top1)
