"""LLaVASeg's chain-of-thought prompts (§3.2) and the parsing of their answers.

The paper's three steps, in its words (the default templates):
  (1) reason      "What is the object or part that is [USER QUERY] in this image?"; a query that is
                  already a question is asked as it is. Asked alone: its answer is the MLLM's own
                  dialogue, what Table 1 scores with ROUGE-L and CIDEr.
  (2) target      "Here is the conversation: The question is: [QUESTION] The answer is: [ANSWER]
                  Please analyze the conversation and identify the distinct physical objects or
                  areas that the user wants from the image."
  (3) attributes  "Here is the target: The target is: [TARGET] Briefly describe the target entity or
                  part's visual attributes that can discriminate them from the image. Each visual
                  attribute can be color, shape, and relative position to other objects in the image."
"In the implementation, the target prompting step and the attribute prompting step are performed in
the same round of conversation": after step 1, one round asks "Follow these guidelines strictly: (1)
Please analyze the conversation... (2) Briefly describe the target entity or..." (`merged`, the
default; the paper elides the middle of both guidelines, filled here with the steps' own sentences).
merged=False asks steps 2 and 3 as two rounds, the parsed target filled into step 3. Every step is
its own conversation with the image, the earlier exchange quoted in the prompt as the paper writes it.

`steps` switches Table 3a's ablation: 1 prompts the segmenter with step 1's answer, 2 with the
target, 3 (the default) with the target and its attributes.

Datasets with only short descriptions (refCOCO expressions, class names) have no reasoning to do:
step 1 is simulated, its answer filled from `simulated` Q-A templates (§3.4), and the MLLM answers
the later steps about that exchange.

Every string is a field of Templates, editable through model.options.templates.
"""

import random
import re
from dataclasses import dataclass, field, fields

REASONING, SHORT = "reasoning", "short"  # query kinds: step 1 generated / simulated

ANALYZE = (
    "Please analyze the conversation and identify the distinct physical objects or areas that the user wants from "
    "the image."
)
DESCRIBE = (
    "Briefly describe the target entity or part's visual attributes that can discriminate them from the image. Each "
    "visual attribute can be color, shape, and relative position to other objects in the image."
)
CONVERSATION = "Here is the conversation:\nThe question is: {question}\nThe answer is: {answer}\n"


@dataclass
class Templates:
    reason: str = "What is the object or part that is {query} in this image?"
    target: str = CONVERSATION + ANALYZE
    attributes: str = "Here is the target:\nThe target is: {target}\n" + DESCRIBE
    merged: str = CONVERSATION + f"Follow these guidelines strictly: (1) {ANALYZE} (2) {DESCRIBE}"
    simulated: list = field(
        default_factory=lambda: ["It is the {query}.", "The {query}.", "That is the {query} in the image."]
    )
    prompt: str = "{target}. {attributes}"  # the text whose MLLM embeddings prompt the segmenter (steps = 3)

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
        return " ".join([self.reason, self.target, self.attributes, self.merged, *self.simulated, self.prompt])


def reason_question(query: str, templates: Templates) -> str:
    """Step 1's question: the query itself when it asks something, else the reason template."""
    query = query.strip()
    return query if query.endswith("?") else templates.reason.format(query=query.rstrip("."))


def simulated_answer(query: str, key: str, templates: Templates) -> str:
    """Step 1's answer for a short description: a template chosen from the sample's key (the same
    answer every time the sample is seen, so the cache and the model agree)."""
    return random.Random(key).choice(templates.simulated).format(query=query.strip().rstrip("."))


def check_kind(kind: str) -> None:
    if kind not in (REASONING, SHORT):
        raise ValueError(f"kind must be {REASONING!r} or {SHORT!r}, got {kind!r}")


GUIDE = re.compile(r"(?:^|\s)\(?([12])\s*[).:]\s", re.MULTILINE)


def _clean(text: str) -> str:
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)  # word tokenizers decode "red ." for "red."
    return " ".join(text.split()).strip(" .,;:!?'\"")


def parse_target(answer: str) -> str:
    """Step 2's answer as a name: its first sentence, lead-ins such as "The target entity in the
    image is" or "The user wants" and a trailing "from the image" dropped."""
    text = re.split(r"(?<=[a-z0-9])\s*[.!?\n]", _clean(answer), maxsplit=1)[0]
    lead = r"^(it is|it's|this is|that is|the target( entity)?( in the image)? is|the (user|asker) wants)\s+"
    text = re.sub(lead, "", text.strip(), flags=re.IGNORECASE)
    text = re.sub(r"\s+(from|in) the image$", "", text, flags=re.IGNORECASE)
    return _clean(re.sub(r"^(the|a|an)\s+", "", text, flags=re.IGNORECASE))


def parse_guided(answer: str) -> dict:
    """{"target", "attributes", "parsed"} of the merged round's answer: the text after "(1)" up
    to "(2)" names the target, the text after "(2)" holds the attributes. Without both markers
    (parsed False) the first sentence is taken as the target and the rest as the attributes."""
    marks = {m.group(1): m for m in GUIDE.finditer(answer)}
    if "1" in marks and "2" in marks and marks["1"].end() <= marks["2"].start():
        first, second = answer[marks["1"].end() : marks["2"].start()], answer[marks["2"].end() :]
        target = parse_target(first)
        return {"target": target, "attributes": _clean(second), "parsed": bool(target)}
    sentences = re.split(r"(?<=[a-z0-9])\s*[.!?\n]\s*", _clean(answer), maxsplit=1)
    return {
        "target": parse_target(answer),
        "attributes": _clean(sentences[1]) if len(sentences) > 1 else "",
        "parsed": False,
    }


def fallback_target(query: str, kind: str, reason: str) -> str:
    """The name used when none could be parsed: a short query names the target itself; for a
    reasoning query, the reason answer's first sentence."""
    return _clean(query) if kind == SHORT else parse_target(reason) or _clean(query)
