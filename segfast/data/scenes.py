"""Generated scenes for the built-in defaults and tests of the [SEG]-token models (no files):
coloured boxes on grey, later boxes covering earlier ones, some with a white stripe (a part of
its box), and "on top of" interactions where a later box overlaps an earlier one. Instances
have the fields the instance-annotation readers give: id, category, mask (visible pixels),
box (x0, y0, x1, y1), parent (id of the whole for a part) and interactions [(verb, object id)]."""

import random

import numpy as np

from segfast.data.referring import COLOURS
from segfast.text.synthetic import OBJECT_COLOURS, ON_TOP, PART


def _box(mask: np.ndarray) -> tuple:
    ys, xs = np.nonzero(mask)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def synthetic_scene(rng: random.Random, height: int = 48, width: int = 64, count: int = 4, parts: bool = True) -> tuple:
    """(image (H, W, 3) uint8, instances) with every listed instance visible; parts=False leaves
    the boxes plain."""
    image = np.full((height, width, 3), 128, np.uint8)
    label = np.full((height, width), -1)
    colours = rng.sample(OBJECT_COLOURS, min(count, len(OBJECT_COLOURS)))
    boxes = []
    for j, colour in enumerate(colours):
        bh, bw = rng.randint(height // 4, height // 2), rng.randint(width // 4, width // 2)
        y, x = rng.randint(0, height - bh), rng.randint(0, width - bw)
        image[y : y + bh, x : x + bw] = COLOURS[colour]
        label[y : y + bh, x : x + bw] = j
        boxes.append((x, y, x + bw, y + bh))
    stripes = {}
    for j, (x0, y0, x1, y1) in enumerate(boxes):
        if parts and rng.random() < 0.5 and y1 - y0 >= 6:
            mid = (y0 + y1) // 2
            stripes[j] = (x0, mid - 1, x1, mid + 1)
    instances = []
    for j, colour in enumerate(colours):
        visible = label == j
        if visible.sum() < 4:
            continue
        overlaps = [i for i in range(j) if _intersects(boxes[i], boxes[j]) and (label == i).any()]
        instances.append(
            {
                "id": j,
                "category": f"{colour} box",
                "mask": visible,
                "box": _box(visible),
                "parent": None,
                "interactions": [(ON_TOP, i) for i in overlaps],
            }
        )
    for j, (x0, y0, x1, y1) in stripes.items():
        part = np.zeros_like(label, dtype=bool)
        part[y0:y1, x0:x1] = True
        part &= label == j
        if part.sum() >= 2 and any(inst["id"] == j for inst in instances):
            image[part] = COLOURS["white"]
            instances.append(
                {"id": 100 + j, "category": PART, "mask": part, "box": _box(part), "parent": j, "interactions": []}
            )
    return image, instances


def _intersects(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def synthetic_label_map(rng: random.Random) -> tuple:
    """(image, label (H, W) int64 with 255 outside the boxes, class names): a scene without parts
    as a semantic-segmentation sample whose classes are the box colours."""
    image, instances = synthetic_scene(rng, parts=False)
    label = np.full(image.shape[:2], 255, np.int64)
    for inst in instances:
        label[inst["mask"]] = OBJECT_COLOURS.index(inst["category"].split()[0])
    return image, label, list(OBJECT_COLOURS)
