"""SegLLM's conversation text: the mask-encoding slots of a question, the query templates of
MRSeg (separate training and validation sets, §A.2), the 9 positional relations (§A.5.2), the
ways a question names an earlier round's output, and the answers the decoder reads.

Slots. "<mask> <box>" in a question stands for one mask's encoding (its mask embedding, then its
box embedding; §5.3: "Segment the person to the left of <mask> <box>."). The round says whose mask
fills each pair (`encode`: indices into the conversation's masks, then its given masks), so the
same text serves the reference as an earlier round's output ("<instance 2>", "the output of round
2", or its caption) and as a mask supplied with the question (MRSeg-hard: "[ENCODE X] Please
segment the other <class>"). The authors' code writes the pair as [MASK-ENCODE][BOX-ENCODE] in
front of the question, and its interactive form "...[REF:i]" (parse_references) becomes that.

Templates. The paper's templates were written by GPT-4 and are not published (100-200 per query
type for training, 50-100 others for validation); these are ours, in the same roles, with the
training and validation sets disjoint (test_segllm checks it).
"""

import re

from segfast.text.tokens import IMAGE

MASK_SLOT, BOX_SLOT = "<mask>", "<box>"
ENCODE = f"{MASK_SLOT} {BOX_SLOT}"  # one mask's encoding in a question
ANSWER, REF_ANSWER = "It is [SEG].", "Relative to [REF], it is [SEG]."
# conv_templates["vicuna_v1"].system plus its separator " ": the authors' preprocess_plain_gen
# (train.py) formats every SegLLM conversation with that template ("user" where LLaVA v1 says "human")
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions. "
)

# query type -> templates; {name}: the target's caption or class, {ref}: how the reference is named,
# {where}: a positional relation, {verb}: an interaction, {part}/{whole}: a part and its object
TRAIN = {
    "direct": [
        "Please segment the {name}.",
        "Segment the {name}.",
        "Can you segment the {name}?",
        "Could you outline the {name} in the picture?",
        "Show me the {name}.",
        "Find the {name} and segment it.",
        "I need a mask of the {name}.",
        "Where is the {name}? Please segment it.",
    ],
    "positional": [
        "Segment the {name} that is {where} {ref}.",
        "Can you segment the {name} {where} {ref}?",
        "Please find the {name} {where} {ref}.",
        "Show me the {name} which is {where} {ref}.",
        "I am looking for the {name} {where} {ref}; segment it.",
    ],
    "hierarchical": [
        "Can you segment the {part} of {ref}?",
        "Segment the {part} of {ref}.",
        "Please outline the {part} belonging to {ref}.",
        "Show me the {part} of {ref}.",
    ],
    "interactional": [
        "Segment the {name} that {ref} is {verb}.",
        "Can you segment the {name} {ref} is {verb}?",
        "Please find the {name} that {ref} is {verb}.",
    ],
    "hard": [
        "Please segment the other {name}.",
        "Segment the other {name} in the image.",
        "Can you find the other {name}?",
        "There is another {name}; segment it.",
        "Show me the second {name}.",
        "Which is the other {name}? Segment it.",
        "Segment the {name} that is not this one.",
        "Please outline the remaining {name}.",
        "Find the {name} other than this one.",
        "I want the other {name}.",
    ],
}
VAL = {
    "direct": [
        "Identify and segment the {name}.",
        "Give me the segmentation of the {name}.",
        "Highlight the {name} in this image.",
        "Mark the {name} for me.",
    ],
    "positional": [
        "Highlight the {name} located {where} {ref}.",
        "Mark the {name} positioned {where} {ref}.",
        "Give me the mask of the {name} {where} {ref}.",
    ],
    "hierarchical": [
        "Highlight the {part} on {ref}.",
        "Mark the {part} that is part of {ref}.",
    ],
    "interactional": [
        "Highlight the {name} which {ref} is {verb}.",
        "Mark the {name} that {ref} is {verb}.",
    ],
    "hard": [
        "Highlight the other {name}.",
        "Mark the second {name} for me.",
        "Give me the mask of the other {name}.",
        "Where is the other {name}?",
        "Outline the {name} that is not marked.",
    ],
}
TEMPLATE_SETS = {"train": TRAIN, "val": VAL}

# how a later round names an earlier round's output (§A.5.2: its caption with probability 1/2,
# else "<instance i>" or "<the output of round i>"; i counts from 1)
BY_INDEX = ("instance {i}", "the output of round {i}")


def position(target: tuple, ref: tuple, same_instance: bool = False) -> str:
    """The positional relation of a target box to a reference box (x0, y0, x1, y1), §A.5.2: 9
    cells from the target's centre against the reference's edges; the middle cell reads "the same
    as" for another caption of the same instance (RefCOCO) and "overlapping with" otherwise."""
    cx, cy = (target[0] + target[2]) / 2, (target[1] + target[3]) / 2
    col = "left" if cx < ref[0] else "right" if cx > ref[2] else ""
    row = "top" if cy < ref[1] else "bottom" if cy > ref[3] else ""
    if not col and not row:
        return "the same as" if same_instance else "overlapping with"
    if not row:
        return f"to the {col} of"
    if not col:
        return "above" if row == "top" else "below"
    return f"to the {row} {col} of"


RELATIONS = (
    "the same as",
    "overlapping with",
    "to the left of",
    "to the right of",
    "above",
    "below",
    "to the top left of",
    "to the top right of",
    "to the bottom left of",
    "to the bottom right of",
)  # the middle cell's two names and the 8 directions: 9 positions


def with_slots(question: str, count: int = 1) -> str:
    """The question with `count` encodings in front, as the authors' data writes
    [MASK-ENCODE][BOX-ENCODE] before the text."""
    return " ".join([ENCODE] * count + [question])


def parse_references(query: str) -> dict:
    """The authors' interactive form "Segment the hair of instance 1.[REF:1]" -> a round
    {"question": "<mask> <box> Segment the hair of instance 1.", "encode": [0]} (rounds from 0)."""
    refs = [int(i) for i in re.findall(r"\[REF:(\d+)\]", query)]
    if any(i < 1 for i in refs):
        raise ValueError(f"query: [REF:i] counts rounds from 1, got {query!r}")
    text = re.sub(r"\s*\[REF:\d+\]\s*", " ", query).strip()
    return {"question": with_slots(text, len(refs)), "encode": [i - 1 for i in refs]}


def count_slots(question: str) -> int:
    masks, boxes = question.count(MASK_SLOT), question.count(BOX_SLOT)
    if masks != boxes or question.count(ENCODE) != masks:
        raise ValueError(f"question: every {MASK_SLOT} must be followed by {BOX_SLOT}, got {question!r}")
    return masks


TEMPLATES = [
    IMAGE,
    ANSWER,
    REF_ANSWER,
    *RELATIONS,
    *BY_INDEX,
    *(t for s in (TRAIN, VAL) for ts in s.values() for t in ts),
    "the on left right",  # LVIS's location words (segfast.data.multiround)
]
