"""LLaFS answers: polygons as text over coordinate tokens, and their parsers.

Coordinates are quantised per image axis into `bins` bins (LLaFS Supp A.4: 384 tokens [c-0] ...
[c-383] at the 384 x 384 input, so a bin is a pixel): x in [0, W) maps to bin floor(x / W * bins)
(clamped to [0, bins - 1]), written as the token "[c-<bin>]" (added to the LLM's vocabulary as
single ids); a bin reads back as its centre, (bin + 0.5) * W / bins.

One object is "((x1,y1),(x2,y2),...,(x16,y16))" (format_points); an answer is the tuple of the
query's objects, "(c1, c2, ..., cn)" (§3.2.1), so one object reads "(((x1,y1),...,(x16,y16)))"
as in Supp D, and "()" means no object. Whitespace between items is ignored.

parse_answer is strict (AnswerError naming the position); read_answer keeps every complete
polygon of an answer that was cut short or went wrong later, and says what it dropped.
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


def point_texts(polygon, width: float, height: float, bins: int = COORDINATE_BINS) -> list[str]:
    """(V, 2) (x, y) -> V items "([c-x],[c-y])"."""
    poly = torch.as_tensor(polygon, dtype=torch.float64)
    if poly.dim() != 2 or poly.shape[1] != 2:
        raise ValueError(f"a polygon must be (V, 2), got shape {tuple(poly.shape)}")
    xs, ys = quantize(poly[:, 0], width, bins).tolist(), quantize(poly[:, 1], height, bins).tolist()
    return [f"([c-{x}],[c-{y}])" for x, y in zip(xs, ys)]


def format_points(polygon, width: float, height: float, bins: int = COORDINATE_BINS) -> str:
    """One object, "((x1,y1),...,(xV,yV))"."""
    return "(" + ",".join(point_texts(polygon, width, height, bins)) + ")"


def format_answer(polygons, width: float, height: float, bins: int = COORDINATE_BINS) -> str:
    """(n_objects, V, 2) (x, y) polygons -> the answer tuple; no object -> "()"."""
    return "(" + ",".join(format_points(p, width, height, bins) for p in polygons) + ")"


class _Reader:
    """A cursor over an answer with whitespace removed."""

    def __init__(self, text: str, bins: int):
        self.s, self.pos, self.bins = re.sub(r"\s+", "", text), 0, bins
        self.text = text if len(text) <= 80 else text[:60] + f"... ({len(text)} characters)"

    def fail(self, expected):
        found = self.s[self.pos : self.pos + 12] or "end of text"
        raise AnswerError(f"answer {self.text!r}: expected {expected} at character {self.pos}, found {found!r}")

    def take(self, literal):
        if not self.s.startswith(literal, self.pos):
            self.fail(repr(literal))
        self.pos += len(literal)

    def peek(self, literal) -> bool:
        return self.s.startswith(literal, self.pos)

    def coordinate(self) -> int:
        match = _TOKEN.match(self.s, self.pos)
        if match is None:
            self.fail("a coordinate token [c-N]")
        value = int(match.group(1))
        if value >= self.bins:
            self.fail(f"a coordinate bin below {self.bins}")
        self.pos = match.end()
        return value

    def points(self, count: int | None) -> list:
        """ "((x,y),...)" with `count` points (None: any number >= 1)."""
        self.take("(")
        points = []
        while True:
            self.take("(")
            x = self.coordinate()
            self.take(",")
            y = self.coordinate()
            self.take(")")
            points.append((x, y))
            if not self.peek(",("):
                break
            self.pos += 1
        self.take(")")
        if count is not None and len(points) != count:
            raise AnswerError(f"answer {self.text!r}: an object has {len(points)} vertices, expected {count}")
        return points

    def end(self):
        if self.pos != len(self.s):
            self.fail("end of text")


def _pixels(points, width, height, bins) -> torch.Tensor:
    pts = torch.tensor(points)
    return torch.stack([dequantize(pts[:, 0], width, bins), dequantize(pts[:, 1], height, bins)], 1)


def read_answer(
    text: str, width: float, height: float, num_vertices: int = 16, bins: int = COORDINATE_BINS
) -> tuple[list[torch.Tensor], str | None]:
    """(every complete (num_vertices, 2) polygon of the answer in order, None or why the rest was
    dropped): an answer cut off by the token limit, or that goes wrong after some objects, keeps
    the objects written before."""
    r = _Reader(text, bins)
    polygons = []
    try:
        r.take("(")
        if r.peek(")"):
            r.take(")")
            r.end()
            return polygons, None
        while True:
            polygons.append(_pixels(r.points(num_vertices), width, height, bins))
            if r.peek(","):
                r.take(",")
                continue
            r.take(")")
            r.end()
            return polygons, None
    except AnswerError as exc:
        return polygons, str(exc)


def parse_answer(
    text: str, width: float, height: float, num_vertices: int = 16, bins: int = COORDINATE_BINS
) -> list[torch.Tensor]:
    """Answer text -> list of (num_vertices, 2) float64 polygons (bin centres, pixel units).
    Raises AnswerError naming the position and what was expected."""
    polygons, error = read_answer(text, width, height, num_vertices, bins)
    if error is not None:
        raise AnswerError(error)
    return polygons


def parse_points(text: str, width: float, height: float, count: int, bins: int = COORDINATE_BINS) -> torch.Tensor:
    """ "((x,y),...)" with exactly `count` points (the pretraining answer: the hidden vertices) ->
    (count, 2) float64 pixels. Raises AnswerError."""
    r = _Reader(text, bins)
    points = r.points(count)
    r.end()
    return _pixels(points, width, height, bins)
