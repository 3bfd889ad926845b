"""Pictures without extra dependencies: masks coloured over a canvas, saved as PNG."""

import struct
import zlib
from pathlib import Path

import torch

PALETTE = torch.tensor([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [170, 110, 40],
], dtype=torch.float32)


def overlay(masks: torch.Tensor, background: int = 24, alpha: float = 0.65) -> torch.Tensor:
    """(N, H, W) bool masks -> (H, W, 3) uint8 image, each mask in its own colour."""
    h, w = masks.shape[-2:]
    img = torch.full((h, w, 3), float(background))
    for i, m in enumerate(masks.cpu()):
        colour = PALETTE[i % len(PALETTE)]
        img[m] = (1 - alpha) * img[m] + alpha * colour
    return img.round().clamp(0, 255).to(torch.uint8)


def draw_points(img: torch.Tensor, points: torch.Tensor, colour=(255, 255, 255), radius: int = 1) -> torch.Tensor:
    """Marks (x, y) points on an (H, W, 3) uint8 image in place."""
    h, w = img.shape[:2]
    for x, y in points.round().long().tolist():
        img[max(0, y - radius): min(h, y + radius + 1), max(0, x - radius): min(w, x + radius + 1)] = \
            torch.tensor(colour, dtype=torch.uint8)
    return img


def save_png(path, img: torch.Tensor) -> Path:
    """Writes an (H, W, 3) uint8 image as a PNG file."""
    img = img.contiguous().cpu()
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].numpy().tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    return path
