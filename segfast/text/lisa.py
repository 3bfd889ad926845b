"""LISA's question and answer templates (authors' code, utils/utils.py), the evaluation round of its
ValDataset, and the vocabulary of the tiny [SEG]-family tokenizers (every template's words and
the generated data's)."""

import random
import re

from segfast.text.lasagna import QUESTION
from segfast.text.segllm import TEMPLATES
from segfast.text.synthetic import SCENE_WORDS
from segfast.text.tokens import IMAGE

# LISA's ValDataset asks every benchmark query with these and teacher-forces VAL_ANSWER
VAL_SHORT = IMAGE + " What is {name} in this image? Please output segmentation mask."
VAL_LONG = IMAGE + " {sentence} Please output segmentation mask."
VAL_ANSWER = "[SEG]."
SHORT_QUESTIONS = [
    IMAGE + " Can you segment the {name} in this image?",
    IMAGE + " Please segment the {name} in this image.",
    IMAGE + " What is {name} in this image? Please respond with segmentation mask.",
    VAL_SHORT,
]
LONG_QUESTIONS = [IMAGE + " {sentence} Please respond with segmentation mask.", VAL_LONG]
ANSWERS = ["It is [SEG].", "Sure, [SEG].", "Sure, it is [SEG].", "Sure, the segmentation result is [SEG].", VAL_ANSWER]


def vocabulary() -> list:
    """The words of every [SEG]-model template and generated scene: the tiny tokenizer's
    vocabulary (placeholders and the special tokens themselves left out)."""
    text = " ".join(SHORT_QUESTIONS + LONG_QUESTIONS + ANSWERS + TEMPLATES + [QUESTION])
    text = re.sub(r"\{\w+\}|\[\w+\]|<\w+>|[.,?]", " ", text)
    frame = {"USER", "ASSISTANT", ":", ".", ",", "?"}  # segfast.models.lisa.conversation.round_text
    return sorted(set(text.split()) | set(SCENE_WORDS) | frame)


def ask(rng: random.Random, name: str | None = None, sentence: str | None = None) -> dict:
    """One round: a short question about `name` or a long one around `sentence`, a [SEG] answer."""
    question = (
        rng.choice(SHORT_QUESTIONS).format(name=name)
        if sentence is None
        else rng.choice(LONG_QUESTIONS).format(sentence=sentence)
    )
    return {"question": question, "answer": rng.choice(ANSWERS)}


def benchmark_round(query: str, is_sentence: bool) -> dict:
    """LISA's ValDataset round: the fixed question, the answer teacher-forced."""
    question = VAL_LONG.format(sentence=query.strip()) if is_sentence else VAL_SHORT.format(name=query.strip())
    return {"question": question, "answer": VAL_ANSWER}


def with_image_once(rounds: list) -> list:
    """LLaVA shows the image once: only the first question keeps <image>."""
    return [rounds[0]] + [{**r, "question": r["question"].replace(IMAGE + " ", "")} for r in rounds[1:]]
