"""Pictures: the LLaFS prediction grid and training curves (matplotlib, headless)."""

from pathlib import Path

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tint(image: torch.Tensor, mask: torch.Tensor, colour, alpha: float = 0.5) -> torch.Tensor:
    """(3, H, W) image in [0, 1] -> (H, W, 3) with `mask` blended towards `colour`."""
    img = image.permute(1, 2, 0).cpu().clone()
    img[mask.cpu()] = (1 - alpha) * img[mask.cpu()] + alpha * torch.tensor(colour, dtype=img.dtype)
    return img


def llafs_grid(batch: dict, output: dict, path, rows: int = 4) -> Path:
    """A row per episode: support with its mask | query with the LLM's polygon (and whether the
    answer parsed) | refined mask | ground truth."""
    plt = _pyplot()
    rows = min(rows, len(batch["query_image"]))
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2.1 * rows), squeeze=False)
    for r in range(rows):
        query = batch["query_image"][r]
        panels = [
            (_tint(batch["support_images"][r, 0], batch["support_masks"][r, 0], (0.1, 0.9, 0.2)), "support + mask"),
            (query.permute(1, 2, 0).cpu(), "query + LLM polygon" if output["errors"][r] is None else "unparsed"),
            (_tint(query, output["masks"][r], (1.0, 0.2, 0.2)), "refined mask"),
            (_tint(query, batch["query_mask"][r], (0.1, 0.9, 0.2)), "ground truth"),
        ]
        for c, (img, title) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img.clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        for poly in output["polygons"][r]:
            closed = torch.cat([poly, poly[:1]]).cpu() - 0.5  # imshow puts pixel centres on integers
            axes[r, 1].plot(closed[:, 0].numpy(), closed[:, 1].numpy(), "-o", color="yellow", lw=1, ms=2)
    return _save(plt, fig, path)


def training_curves(records: list, before: dict, after: dict, path) -> Path:
    """Loss per step (raw and smoothed) beside the evaluation IoU during training."""
    plt = _pyplot()
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval/iou/gIoU" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [r["step"] for r in train]
    for key, colour in (("loss_llm", "tab:blue"), ("loss_ref", "tab:orange")):
        values = torch.tensor([r[key] for r in train])
        smooth = torch.nn.functional.avg_pool1d(values[None, None], 21, 1, 10, count_include_pad=False)[0, 0]
        left.plot(steps, values.numpy(), color=colour, alpha=0.25, lw=0.8)
        left.plot(steps, smooth.numpy(), color=colour, label=key.replace("loss_", "L_"))
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.set_yscale("log")
    left.legend()
    left.set_title("training losses")
    last = steps[-1] if steps else 0
    for key, name, colour in (("iou", "refined mask", "tab:red"), ("polygon_iou", "LLM polygon", "tab:green")):
        xs = [0] + [r["step"] for r in evals]
        ys = [before[key]] + [r[f"eval/{key}/gIoU"] for r in evals]
        right.plot(xs, ys, "-o", color=colour, label=f"{name} (eval during training)", ms=3)
        right.plot([last], [after[key]], "*", color=colour, ms=12)
    right.set_xlabel("step")
    right.set_ylabel("foreground IoU")
    right.set_ylim(0, 1)
    right.legend(fontsize=8)
    right.set_title(f"held-out IoU (star: final, {after['samples']} pairs)")
    return _save(plt, fig, path)


PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240))


def overlay_masks(image, masks: torch.Tensor, alpha: float = 0.5):
    """(H, W, 3) uint8 RGB array with each (N, H, W) bool mask blended in its own colour (PALETTE,
    cycling; later masks on top) and its outline drawn opaque, so touching masks stay apart."""
    import numpy as np

    out = np.asarray(image, dtype=np.float32).copy()
    masks = masks.cpu().bool()
    for i, mask in enumerate(masks):
        colour = np.array(PALETTE[i % len(PALETTE)], np.float32)
        m = mask.numpy()
        out[m] = (1 - alpha) * out[m] + alpha * colour
        inner = m.copy()  # a pixel is on the outline when a 4-neighbour is outside the mask
        inner[1:] &= m[:-1]
        inner[:-1] &= m[1:]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        out[m & ~inner] = colour
    return out.round().clip(0, 255).astype(np.uint8)
