"""LLaFS answers: polygons as text over 384 coordinate tokens, and a strict parser.

Coordinates are quantised per image axis into COORDINATE_BINS = 384 bins: x in [0, W) maps to
bin floor(x / W * 384) (clamped to [0, 383]), written as the token "[c-<bin>]" (384 tokens
[c-0] ... [c-383], added to the LLM's vocabulary as single ids); a bin reads back as its centre,
(bin + 0.5) * W / 384. One object is "((x1,y1),(x2,y2),...,(x16,y16))"; several objects are
joined with ",", and "()" means no object. Whitespace between items is ignored.
"""

import re

import torch

COORDINATE_BINS = 384
_TOKEN = re.compile(r"\[c-(\d+)\]")


class AnswerError(ValueError):
    """A generated answer that is not a well-formed list of polygons; the message says why."""


def coordinate_tokens(bins: int = COORDINATE_BINS) -> list[str]:
    return [f"[c-{i}]" for i in range(bins)]


def quantize(values: torch.Tensor, size: float, bins: int = COORDINATE_BINS) -> torch.Tensor:
    return torch.clamp(torch.floor(values / size * bins), 0, bins - 1).long()


def dequantize(bins_: torch.Tensor, size: float, bins: int = COORDINATE_BINS) -> torch.Tensor:
    return (bins_.double() + 0.5) * size / bins


def format_answer(polygons, width: float, height: float) -> str:
    """(n_objects, V, 2) (x, y) polygons -> answer text; an empty list/tensor -> "()"."""
    if len(polygons) == 0:
        return "()"
    parts = []
    for poly in polygons:
        poly = torch.as_tensor(poly, dtype=torch.float64)
        if poly.dim() != 2 or poly.shape[1] != 2:
            raise ValueError(f"polygons must be (n_objects, V, 2), got a polygon of shape {tuple(poly.shape)}")
        xs, ys = quantize(poly[:, 0], width).tolist(), quantize(poly[:, 1], height).tolist()
        parts.append("(" + ",".join(f"([c-{x}],[c-{y}])" for x, y in zip(xs, ys)) + ")")
    return ",".join(parts)


def parse_answer(
    text: str, width: float, height: float, num_vertices: int = 16, bins: int = COORDINATE_BINS
) -> list[torch.Tensor]:
    """Answer text -> list of (num_vertices, 2) float64 polygons (bin centres, pixel units).
    Raises AnswerError naming the position and what was expected."""
    s = re.sub(r"\s+", "", text)
    pos = 0

    def fail(expected):
        found = s[pos : pos + 12] or "end of text"
        raise AnswerError(f"answer {text!r}: expected {expected} at character {pos}, found {found!r}")

    def take(literal):
        nonlocal pos
        if not s.startswith(literal, pos):
            fail(repr(literal))
        pos += len(literal)

    def coordinate():
        nonlocal pos
        match = _TOKEN.match(s, pos)
        if match is None:
            fail("a coordinate token [c-N]")
        value = int(match.group(1))
        if value >= bins:
            fail(f"a coordinate bin below {bins}")
        pos = match.end()
        return value

    if s == "()":
        return []
    polygons = []
    while True:
        take("(")
        points = []
        while True:
            take("(")
            x = coordinate()
            take(",")
            y = coordinate()
            take(")")
            points.append((x, y))
            if s.startswith(",(", pos):
                pos += 1
                continue
            break
        take(")")
        if len(points) != num_vertices:
            raise AnswerError(
                f"answer {text!r}: object {len(polygons) + 1} has {len(points)} vertices, expected {num_vertices}"
            )
        pts = torch.tensor(points)
        polygons.append(torch.stack([dequantize(pts[:, 0], width, bins), dequantize(pts[:, 1], height, bins)], 1))
        if pos == len(s):
            return polygons
        take(",")
