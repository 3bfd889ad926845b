"""Few-shot evaluation of a trained LLaFS checkpoint: mean foreground IoU over a fold's classes."""

import torch
from tqdm import tqdm

from segfast.data import collate
from segfast.data.fewshot import FewShotEpisodes, FoldIoU


@torch.no_grad()
def evaluate_fold(model, root, dataset: str = "pascal", fold: int = 0, shots: int = 1, episodes: int = 1000,
                  batch_size: int = 8, seed: int = 0, attributes: str | None = None, device="cpu") -> dict:
    """Runs `episodes` episodes of the fold's test classes through model.predict (generate,
    parse, rasterize, refine) and returns {"mIoU", "per_class", "parsed"}."""
    data = FewShotEpisodes(root, dataset, fold, shots, "val", model.image_size, episodes, seed,
                           attributes=attributes)
    meter, parsed = FoldIoU(data.classes), 0
    model.eval()
    for start in tqdm(range(0, episodes, batch_size), desc=f"{dataset} fold {fold}, {shots}-shot"):
        batch = collate([data[i] for i in range(start, min(episodes, start + batch_size))])
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out = model.predict(batch)
        meter.update(out["masks"].cpu(), batch["query_mask"].cpu(), batch["class_ids"], batch["query_ignore"].cpu())
        parsed += sum(e is None for e in out["errors"])
    return {**meter.compute(), "parsed": parsed / episodes}
