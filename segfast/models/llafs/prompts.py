"""LLaFS instructions: the segmentation task instruction and the pretraining instruction.

Each image enters the text as IMAGE, which the model replaces with that image's Q-Former
tokens. Support masks enter twice: through the image path (a learned embedding added to the
features inside the mask) and as text, each support object's polygon in the answer format.

The paper's exact wording was not available to us; these templates carry the same information
in the same places (support images with their objects, the optional fine-grained in-context
description, the query image, and for pretraining the query polygon with hidden vertices
written as MASK_TOKEN). Change TASK / PRETRAIN / ATTRIBUTES to match a released checkpoint.

Region attributes (the fine-grained in-context instruction) are pre-computed dataset input,
as the paper pre-generates them: a JSON file mapping each class name to a list of short
phrases, e.g. {"dog": ["four legs", "furry coat", "a tail"]}; they are joined with "; ".
"""

from segfast.models.llafs.answer import coordinate_tokens, format_answer, quantize
from segfast.text.tokens import IMAGE

MASK_TOKEN = "[mask]"

SUPPORT = "Support image {index}: {image} Its target objects: {polygons}."
ATTRIBUTES = "The target class is {name}, described by: {attributes}."
TASK = (
    "{supports} {attributes}Query image: {image} Segment every object of the target class in the query "
    "image and answer with a 16-vertex polygon for each."
)
PRETRAIN = (
    "{supports} Query image: {image} Some vertices of the query object are given and the others are "
    "[mask]: {hints}. Answer with all 16 vertices of the query object."
)


def special_tokens() -> list[str]:
    """Tokens added to the LLM's vocabulary as single ids."""
    return [IMAGE, MASK_TOKEN, *coordinate_tokens()]


def _supports(support_polygons, width, height) -> str:
    return " ".join(
        SUPPORT.format(index=i + 1, image=IMAGE, polygons=format_answer(p, width, height))
        for i, p in enumerate(support_polygons)
    )


def task_instruction(
    support_polygons, width: float, height: float, class_name: str | None = None, attributes=None
) -> str:
    """support_polygons: per support image, its (n_objects, V, 2) polygons; attributes: the
    region-attribute phrases of the target class, or None."""
    described = ""
    if attributes:
        phrases = [attributes] if isinstance(attributes, str) else list(attributes)
        described = ATTRIBUTES.format(name=class_name or "the target", attributes="; ".join(phrases)) + " "
    return TASK.format(supports=_supports(support_polygons, width, height), attributes=described, image=IMAGE)


def hint_text(polygon, hints, width: float, height: float) -> str:
    """The query polygon with the vertices not in `hints` (V,) bool written as MASK_TOKEN."""
    xs, ys = quantize(polygon[:, 0], width).tolist(), quantize(polygon[:, 1], height).tolist()
    items = [f"([c-{x}],[c-{y}])" if keep else MASK_TOKEN for x, y, keep in zip(xs, ys, hints.tolist())]
    return "(" + ",".join(items) + ")"


def pretrain_instruction(support_polygons, query_polygon, hints, width: float, height: float) -> str:
    return PRETRAIN.format(
        supports=_supports(support_polygons, width, height),
        image=IMAGE,
        hints=hint_text(query_polygon, hints, width, height),
    )


def template_words() -> list[str]:
    """Every word and punctuation mark the templates use (the tiny demo tokenizer's vocabulary)."""
    import re

    text = " ".join([SUPPORT, ATTRIBUTES, TASK, PRETRAIN])
    text = re.sub(r"\{[a-z]+\}", " ", text).replace(MASK_TOKEN, " ")
    return sorted(set(re.findall(r"\w+|[^\w\s]", text)) | set("(),;.:"))
