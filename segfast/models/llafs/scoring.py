"""Few-shot scoring as HSNet / PFENet / BAM count it: the prediction is resized (bilinear
logits) to the label's original size, pixels marked 255 there are ignored, and per class the
intersections and unions are summed (segfast.metrics.FoldIoU, one run per episode seed)."""

import torch
import torch.nn.functional as F


def at_original_size(logits: torch.Tensor, size) -> torch.Tensor:
    """(S, S) foreground logits -> (H, W) bool at the label's size."""
    h, w = (int(s) for s in size)
    return F.interpolate(logits[None, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0] > 0


def score_fold(meter, out: dict, batch: dict, size: int) -> None:
    """Updates a FoldIoU with predict()'s output: at each label's original size when the batch
    carries original_mask / original_ignore, else at the episode's size with query_ignore."""
    runs = batch.get("episode_run")
    if "original_mask" not in batch:
        ignore = batch.get("query_ignore")
        meter.update(
            out["masks"].cpu(),
            batch["query_mask"].bool().cpu(),
            batch["class_ids"],
            ignore.bool().cpu() if ignore is not None else None,
            runs,
        )
        return
    for i, (gt, ignore) in enumerate(zip(batch["original_mask"], batch["original_ignore"])):
        pred = at_original_size(out["logits"][i], gt.shape[-2:]).cpu()
        meter.update(
            pred[None],
            gt.bool().cpu()[None],
            [batch["class_ids"][i]],
            ignore.bool().cpu()[None],
            None if runs is None else [runs[i]],
        )
