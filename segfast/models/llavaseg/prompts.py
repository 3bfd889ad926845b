"""LLaVASeg's chain-of-thought prompts: templates and the parsing of their answers.

Three steps: (1) reason: "What is the object or part that is {query} in this image?" (the query
itself when it is already a question); (2) target: the name of what the answer points at;
(3) attributes: its visual attributes (color, shape, relative location). By default the steps
are merged into one round (question + both instructions, one answer holding
"Target: ... Attributes: ..."); with merged=False they are three rounds, the target inserted
into the attribute question.

Datasets with only short descriptions (refCOCO expressions, class names) have no reasoning to
do: step 1 is simulated, its answer filled from `simulated` Q-A templates, and the MLLM answers
steps 2 and 3 after that history (the paper's data construction).

Every string is a field of Templates, editable through model.options.templates.
"""

import random
import re
from dataclasses import dataclass, field, fields

from segfast.text.tokens import IMAGE

REASONING, SHORT = "reasoning", "short"  # query kinds: step 1 generated / simulated


@dataclass
class Templates:
    reason: str = "What is the object or part that is {query} in this image?"
    extract: str = (
        "Then name the target after 'Target:' in a few words, and describe its color, shape and "
        "location in the image after 'Attributes:'."
    )
    target: str = "What is the name of the target in your answer? Answer in a few words."
    attributes: str = "Describe the color, shape and location of the {target} in the image in one sentence."
    simulated: list = field(
        default_factory=lambda: ["It is the {query}.", "The {query}.", "That is the {query} in the image."]
    )
    prompt: str = "{target}. {attributes}"  # the text whose MLLM embeddings prompt the segmenter

    @classmethod
    def of(cls, overrides: dict | None) -> "Templates":
        names = {f.name for f in fields(cls)}
        unknown = set(overrides or {}) - names
        if unknown:
            raise ValueError(f"model.options.templates: unknown templates {sorted(unknown)}; known: {sorted(names)}")
        out = cls(**(overrides or {}))
        if not out.simulated:
            raise ValueError("model.options.templates.simulated: at least one answer template is required")
        return out

    def words(self) -> str:
        return " ".join([self.reason, self.extract, self.target, self.attributes, *self.simulated, self.prompt])


def reason_question(query: str, templates: Templates) -> str:
    """Step 1's question: the query itself when it asks something, else the reason template."""
    query = query.strip()
    return query if query.endswith("?") else templates.reason.format(query=query.rstrip("."))


def simulated_answer(query: str, key: str, templates: Templates) -> str:
    """Step 1's answer for a short description: a template chosen from the sample's key (the same
    answer every time the sample is seen, so the cache and the model agree)."""
    return random.Random(key).choice(templates.simulated).format(query=query.strip().rstrip("."))


def first_rounds(query: str, kind: str, key: str, templates: Templates, merged: bool) -> list:
    """The rounds before the first generation: [reason round] (its answer None = to generate, or
    simulated), then for merged short queries the extract round. The image goes in the first."""
    if kind not in (REASONING, SHORT):
        raise ValueError(f"kind must be {REASONING!r} or {SHORT!r}, got {kind!r}")
    question = f"{IMAGE} {reason_question(query, templates)}"
    if kind == REASONING:
        return [{"question": f"{question} {templates.extract}" if merged else question, "answer": None}]
    rounds = [{"question": question, "answer": simulated_answer(query, key, templates)}]
    return rounds + [{"question": templates.extract if merged else templates.target, "answer": None}]


MARKER = re.compile(r"\b(target|attributes)\s*:", re.IGNORECASE)


def _clean(text: str) -> str:
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)  # word tokenizers decode "red ." for "red."
    return " ".join(text.split()).strip(" .,;:!?'\"")


def parse_merged(answer: str) -> dict:
    """{"reason", "target", "attributes", "parsed"} of a merged answer: the text before
    "Target:", the text after it (up to "Attributes:") and after "Attributes:". parsed is False
    when either marker is missing or the target is empty (the caller then falls back)."""
    parts, last, name = {"reason": "", "target": "", "attributes": ""}, 0, "reason"
    for m in MARKER.finditer(answer):
        parts[name] += answer[last : m.start()]
        last, name = m.end(), m.group(1).lower()
    parts[name] += answer[last:]
    found = {m.group(1).lower() for m in MARKER.finditer(answer)}
    out = {k: _clean(v) for k, v in parts.items()}
    return {**out, "parsed": found == {"target", "attributes"} and bool(out["target"])}


def parse_target(answer: str) -> str:
    """Step 2's answer as a name: its first sentence, a leading "Target:" / "It is (the)" dropped."""
    text = MARKER.sub("", answer)
    text = re.split(r"(?<=[a-z0-9])\s*[.!?\n]", _clean(text), maxsplit=1)[0]
    text = re.sub(r"^(it is|it's|this is|that is|the target is)\s+", "", text.strip(), flags=re.IGNORECASE)
    return _clean(re.sub(r"^(the|a|an)\s+", "", text, flags=re.IGNORECASE))


def parse_attributes(answer: str) -> str:
    return _clean(MARKER.sub("", answer))


def fallback_target(query: str, kind: str, reason: str) -> str:
    """The name used when none could be parsed: a short query names the target itself; for a
    reasoning query, the reason answer's first sentence."""
    return _clean(query) if kind == SHORT else parse_target(reason) or _clean(query)
