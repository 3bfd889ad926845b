"""LISA's text (authors' code: utils/utils.py, the datasets of utils/, model/llava/conversation.py):
the question and answer templates its datasets draw from, LLaVA v1's system prompt, the
evaluation round of its ValDataset, and the vocabulary of the tiny [SEG]-family tokenizers.

Every LISA conversation is one round `{SYSTEM}USER: <image>\\n{question} ASSISTANT: {answer}</s>`
(segfast.models.lisa.conversation writes the frame); a training image gives one such
conversation per sampled sentence or class. Answers hold LISA's [SEG]; LaSagnA's data write its
<SEG> in the same places (`seg_token`).
"""

import random
import re

from segfast.text.lasagna import QUESTION
from segfast.text.segllm import TEMPLATES
from segfast.text.synthetic import SCENE_WORDS
from segfast.text.tokens import IMAGE, SEG

# conv_templates["llava_v1"].system plus its separator " " (LISA trains and evaluates with llava_v1)
SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions. "
)
SHORT_QUESTIONS = [
    IMAGE + "\nCan you segment the {name} in this image?",
    IMAGE + "\nPlease segment the {name} in this image.",
    IMAGE + "\nWhat is {name} in this image? Please respond with segmentation mask.",
    IMAGE + "\nWhat is {name} in this image? Please output segmentation mask.",
]
LONG_QUESTIONS = [
    IMAGE + "\n{sentence} Please respond with segmentation mask.",
    IMAGE + "\n{sentence} Please output segmentation mask.",
]
# ReasonSeg's explanatory answers: "{sentence} {EXPLAIN}" -> "{ANSWER} {explanation}"
EXPLAIN = [
    "Please output segmentation mask and explain why.",
    "Please output segmentation mask and explain the reason.",
    "Please output segmentation mask and give some explanation.",
]
ANSWERS = ["It is [SEG].", "Sure, [SEG].", "Sure, it is [SEG].", "Sure, the segmentation result is [SEG].", "[SEG]."]
# LISA's ValDataset asks every benchmark query with these ("\n " as written there) and teacher-forces VAL_ANSWER
VAL_SHORT = IMAGE + "\n What is {name} in this image? Please output segmentation mask."
VAL_LONG = IMAGE + "\n {sentence} Please output segmentation mask."
VAL_ANSWER = "[SEG]."


def vocabulary() -> list:
    """The words of every [SEG]-model template, LLaVA v1's system prompt and the generated scenes:
    the tiny tokenizer's vocabulary (split as its pre-tokenizer splits: words and punctuation;
    placeholders and special tokens left out)."""
    text = " ".join(SHORT_QUESTIONS + LONG_QUESTIONS + EXPLAIN + ANSWERS + TEMPLATES + [QUESTION, SYSTEM])
    text = re.sub(r"\{\w+\}|\[\w+\]|<\w+>", " ", text)
    frame = {"USER", "ASSISTANT", ":"}  # segfast.models.lisa.conversation.round_text
    return sorted(set(re.findall(r"\w+|[^\w\s]", text)) | set(SCENE_WORDS) | frame)


def with_token(text: str, seg_token: str) -> str:
    """LISA's answer text with another system's mask token (LaSagnA's <SEG>) for [SEG]."""
    return text.replace(SEG, seg_token)


def ask(rng: random.Random, name: str | None = None, sentence: str | None = None, seg_token: str = SEG) -> list:
    """One single-round conversation as LISA's datasets write it: a short question about `name`
    (is_sentence false; LISA lower-cases it) or a long one around `sentence`, a random answer."""
    question = (
        rng.choice(SHORT_QUESTIONS).format(name=name.lower())
        if sentence is None
        else rng.choice(LONG_QUESTIONS).format(sentence=sentence)
    )
    return [{"question": question, "answer": with_token(rng.choice(ANSWERS), seg_token)}]


def explained(rng: random.Random, sentence: str, explanation: str, with_mask: bool, seg_token: str = SEG) -> list:
    """ReasonSeg's explanatory conversation (LISA's reason_seg_dataset): with_mask, the question
    asks for the mask and an explanation and the answer is "{ANSWER} {explanation}"; without,
    the bare query is answered by the explanation alone (no mask)."""
    if not with_mask:
        return [{"question": f"{IMAGE}\n{sentence}", "answer": explanation}]
    answer = with_token(rng.choice(ANSWERS), seg_token)
    return [{"question": f"{IMAGE}\n{sentence} {rng.choice(EXPLAIN)}", "answer": f"{answer} {explanation}"}]


def part_name(rng: random.Random, obj: str, part: str) -> str:
    """A PACO-LVIS / PASCAL-Part (object, part) class as LISA's sem_seg_dataset names it."""
    return f"{obj} {part}" if rng.random() < 0.5 else f"the {part} of the {obj}"


def benchmark_round(query: str, is_sentence: bool, seg_token: str = SEG) -> dict:
    """LISA's ValDataset round: the fixed question and the answer it teacher-forces."""
    question = VAL_LONG.format(sentence=query.strip()) if is_sentence else VAL_SHORT.format(name=query.strip())
    return {"question": question, "answer": with_token(VAL_ANSWER, seg_token)}
