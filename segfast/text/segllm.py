"""SegLLM's conversation templates (segfast.data.multiround builds conversations from them; the
tiny models' vocabulary reads them). WHERE holds the positional relations and their box tests."""

from segfast.text.tokens import IMAGE

RELATIONS = ("positional", "hierarchical", "interactional")
FIRST = IMAGE + " Please segment the {name}."
DIRECT = "Please segment the {name}."
POSITIONAL = "Segment the {name} {where} the {ref}."
HIERARCHICAL = "Segment the {name} of the {ref}."
INTERACTIONAL = "Segment the {name} that is {verb} the {ref}."
ANSWER, REF_ANSWER = "It is [SEG].", "Relative to [REF], it is [SEG]."
WHERE = {
    "to the left of": lambda t, r: t[2] <= r[0],
    "to the right of": lambda t, r: t[0] >= r[2],
    "above": lambda t, r: t[3] <= r[1],
    "below": lambda t, r: t[1] >= r[3],
}
TEMPLATES = [FIRST, DIRECT, POSITIONAL, HIERARCHICAL, INTERACTIONAL, ANSWER, REF_ANSWER, *WHERE]
