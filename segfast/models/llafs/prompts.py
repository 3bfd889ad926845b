"""LLaFS instructions in the paper's wording.

Task instruction (§3.2.1, its K-shot form Supp A.6, as assembled in Supp D's "Complete
Instruction"): the task, the answer format with the outer tuple, the clockwise rule, the
coordinate range, the class's properties (§3.2.2's attributes), then per support image its
ground truth and its region-attribute table, then the query:

    For each object within the class {class} in an image, output coordinates of a 16-point polygon
    that encloses the object. These points should be arranged in a clockwise direction. The output
    should be a tuple in the format of (c1, c2, ..., cn), where cn is the coordinates for the n-th
    object and its format should be ((x1,y1),(x2,y2),..., (x16,y16)). The coordinate value should be
    within (0, 384). To accomplish this task, you can refer to the following properties of {class}:
    {class} has {attributes}. For example, for image <image>, the output should be {answer},
    because in these regions, {polygon} is {attributes}, ...; for image <image>, ... . For image
    <image>, what is the output?

Pretraining instruction (Supp A.2.4), the query polygon with its hidden vertices written as
MASK_TOKEN; the answer is the hidden vertices in order (segfast.models.llafs.answer):

    For the target object in a query image that has the same class as the support image
    foreground, output coordinates of a 16-point polygon that encloses the object. These points
    should be arranged in a clockwise direction and the format of their coordinates is ((x1, y1),
    (x2, y2), ..., (x16, y16)). The coordinate value should be within (0, 384). For support image
    <image>, the foreground is {polygon}. For the target object in the query image <image>, the
    output should be {masked polygon}. What is the remaining points?

With V-point polygons (model.options.num_vertices, Fig. 5's ablation) both say "V-point
polygon" and "(xV,yV)" / "(xV, yV)"; the paper's V = 16 reads as above.

Ablations (Tables 2-4): `abstract` replaces the task definition by "Perform image segmentation."
(Table 4's abstract summary); without support images the examples are left out (Table 2); without
attributes or tables the fine-grained in-context parts are left out (Tables 3-4).

A region-attribute table (segfast.jobs.llafs_tables) is, per support image, a list of regions
{"polygon": (V, 2) pixels in the episode's frame, "attributes": [phrases]}.
"""

import re

from segfast.models.llafs.answer import COORDINATE_BINS, coordinate_tokens, format_answer, format_points, point_texts
from segfast.text.fewshot import class_words
from segfast.text.tokens import IMAGE

MASK_TOKEN = "[mask]"

TASK = (
    "For each object within the class {name} in an image, output coordinates of a {vertices}-point polygon that "
    "encloses the object. These points should be arranged in a clockwise direction. The output should be a "
    "tuple in the format of (c1, c2, ..., cn), where cn is the coordinates for the n-th object and its format "
    "should be ((x1,y1),(x2,y2),..., (x{vertices},y{vertices})). The coordinate value should be within (0, {bins})."
)
ABSTRACT = "Perform image segmentation."
PROPERTIES = " To accomplish this task, you can refer to the following properties of {name}: {name} has {attributes}."
EXAMPLE = "for image {image}, the output should be {answer}"
BECAUSE = ", because in these regions, {regions}"
QUERY = " For image {image}, what is the output?"
PRETRAIN = (
    "For the target object in a query image that has the same class as the support image foreground, output "
    "coordinates of a {vertices}-point polygon that encloses the object. These points should be arranged in a "
    "clockwise direction and the format of their coordinates is ((x1, y1), (x2, y2), ..., (x{vertices}, "
    "y{vertices})). The coordinate value should be within (0, {bins}). {supports} For the target object in the "
    "query image {image}, the output should be {masked}. What is the remaining points?"
)
PRETRAIN_SUPPORT = "For support image {image}, the foreground is {polygon}."


def special_tokens(bins: int = COORDINATE_BINS) -> list[str]:
    """Tokens added to the LLM's vocabulary as single ids."""
    return [IMAGE, MASK_TOKEN, *coordinate_tokens(bins)]


def _table(regions, size, bins) -> str:
    return ", ".join(
        f"{format_points(r['polygon'], size, size, bins)} is {', '.join(r['attributes'])}"
        for r in regions
        if r["attributes"]
    )


def task_instruction(
    support_polygons,
    size: float,
    class_name: str,
    attributes=None,
    tables=None,
    bins: int = COORDINATE_BINS,
    abstract: bool = False,
    with_support: bool = True,
    num_vertices: int = 16,
) -> str:
    """support_polygons: per support image its (n_objects, V, 2) polygons (pixels of a size x size
    image); attributes: the class's phrases or None; tables: per support image its regions or
    None. One IMAGE per support (unless with_support is False), then one for the query. The
    instruction asks for num_vertices-point polygons (Fig. 5's ablation; the paper's 16)."""
    text = ABSTRACT if abstract else TASK.format(name=class_name, bins=bins, vertices=num_vertices)
    if attributes:
        text += PROPERTIES.format(name=class_name, attributes=", ".join(attributes))
    if with_support:
        examples = []
        for k, polygons in enumerate(support_polygons):
            example = EXAMPLE.format(image=IMAGE, answer=format_answer(polygons, size, size, bins))
            regions = _table(tables[k], size, bins) if tables else ""
            examples.append(example + (BECAUSE.format(regions=regions) if regions else ""))
        text += " For example, " + "; ".join(examples) + "."
    return text + QUERY.format(image=IMAGE)


def masked_polygon(polygon, hints, size: float, bins: int = COORDINATE_BINS) -> str:
    """The query polygon with the vertices not in `hints` (V,) bool written as MASK_TOKEN."""
    items = point_texts(polygon, size, size, bins)
    return "(" + ",".join(item if keep else MASK_TOKEN for item, keep in zip(items, hints.tolist())) + ")"


def pretrain_instruction(support_polygons, query_polygon, hints, size: float, bins: int = COORDINATE_BINS) -> str:
    """support_polygons: per support image (1, V, 2), its pseudo foreground; the instruction asks
    for V-point polygons, V = len(hints)."""
    supports = " ".join(
        PRETRAIN_SUPPORT.format(image=IMAGE, polygon=format_points(p[0], size, size, bins)) for p in support_polygons
    )
    masked = masked_polygon(query_polygon, hints, size, bins)
    return PRETRAIN.format(bins=bins, vertices=len(hints), supports=supports, image=IMAGE, masked=masked)


def pretrain_answer(query_polygon, hints, size: float, bins: int = COORDINATE_BINS) -> str:
    """The hidden vertices in order, "((x,y),...)": what the pretraining instruction asks for."""
    return format_points(query_polygon[~hints], size, size, bins)


def template_words(num_vertices: int = 16) -> list[str]:
    """Every word and punctuation mark the templates use with num_vertices-point polygons, and
    the benchmarks' class names (the tiny offline tokenizer's vocabulary)."""
    text = " ".join([TASK, ABSTRACT, PROPERTIES, EXAMPLE, BECAUSE, QUERY, PRETRAIN, PRETRAIN_SUPPORT])
    text = re.sub(r"\{[a-z]+\}", " ", text.replace("{vertices}", str(num_vertices))).replace(MASK_TOKEN, " ")
    words = set(re.findall(r"\w+|[^\w\s]", text)) | set("(),;.:") | class_words() | {"64", "384"}
    return sorted(words)
