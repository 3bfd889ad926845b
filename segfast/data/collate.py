"""Collate: pads token sequences (labels with -100, attention mask), stacks equal-shaped tensors
such as masks, and keeps everything else as lists (None for a sample without that key: a
mixture's members may carry different evaluation fields)."""

import torch

IGNORE_LABEL = -100
TOKEN_KEYS = {"input_ids": 0, "labels": IGNORE_LABEL}


def collate(samples: list, pad_id: int = 0) -> dict:
    if not samples:
        raise ValueError("collate needs at least one sample")
    batch = {}
    for key in dict.fromkeys(k for s in samples for k in s):
        values = [s.get(key) for s in samples]
        if any(v is None for v in values):
            batch[key] = values
            continue
        if key in TOKEN_KEYS:
            fill = pad_id if key == "input_ids" else TOKEN_KEYS[key]
            longest = max(v.shape[0] for v in values)
            out = torch.full((len(values), longest), fill, dtype=values[0].dtype)
            for i, v in enumerate(values):
                out[i, : v.shape[0]] = v
            batch[key] = out
            if key == "input_ids":
                mask = torch.zeros(len(values), longest, dtype=torch.long)
                for i, v in enumerate(values):
                    mask[i, : v.shape[0]] = 1
                batch["attention_mask"] = mask
        elif isinstance(values[0], torch.Tensor) and all(v.shape == values[0].shape for v in values):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch


def to_device(batch: dict, device) -> dict:
    """The batch's top-level tensors on `device` (lists of per-sample tensors stay where they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
