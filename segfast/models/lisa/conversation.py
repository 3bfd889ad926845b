"""Conversations as token ids for the [SEG]-token family.

A conversation is a list of rounds {"question": str, "answer": str | None}; the text is
LLaVA v1's: `{system}USER: {question} ASSISTANT: {answer}</s>` per round (the system line is
empty by default). The image is the `<image>` token in a question, expanded to the model's
image-feature slots. Only answer tokens (and their </s>) carry labels. A last round with answer
None is a prompt for generation. `memory_after` token ids (SegLLM's [SEG]) are each followed by
`memory_slots` slots that receive a mask encoding; they carry no label.
"""

from dataclasses import dataclass, field

IGNORE = -100
TEXT, IMAGE_SLOT, MEMORY_SLOT = 0, 1, 2


@dataclass
class Encoded:
    ids: list = field(default_factory=list)  # token ids; slots hold the pad id
    labels: list = field(default_factory=list)
    kinds: list = field(default_factory=list)  # TEXT, IMAGE_SLOT or MEMORY_SLOT per position

    def extend(self, ids, labelled: bool, kind: int = TEXT):
        self.ids += ids
        self.labels += ids if labelled else [IGNORE] * len(ids)
        self.kinds += [kind] * len(ids)


def round_text(question: str, answer: str | None, system: str = "") -> tuple[str, str | None]:
    """(prompt, answer) strings of one round: the LLaVA v1 template."""
    return f"{system}USER: {question} ASSISTANT:", None if answer is None else f" {answer}"


def encode(
    tokenizer,
    rounds: list,
    *,
    image_token_id: int,
    image_slots: int,
    memory_after=(),
    memory_slots: int = 0,
    system: str = "",
) -> Encoded:
    if not rounds:
        raise ValueError("conversation: at least one round is required")
    out = Encoded()
    pad = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        out.extend([tokenizer.bos_token_id], False)
    for r, turn in enumerate(rounds):
        answer = turn.get("answer")
        if answer is None and r != len(rounds) - 1:
            raise ValueError(f"conversation: round {r} has no answer but is not the last round")
        prompt, reply = round_text(turn["question"], answer, system if r == 0 else "")
        for t in tokenizer(prompt, add_special_tokens=False)["input_ids"]:
            if t == image_token_id:
                out.extend([pad] * image_slots, False, IMAGE_SLOT)
            else:
                out.extend([t], False)
        if reply is None:
            break
        for t in tokenizer(reply, add_special_tokens=False)["input_ids"]:
            if t == image_token_id:
                raise ValueError(f"conversation: round {r}'s answer contains the image token")
            out.extend([t], True)
            if t in memory_after:
                out.extend([pad] * memory_slots, False, MEMORY_SLOT)
        out.extend([tokenizer.eos_token_id], True)
    if out.kinds.count(IMAGE_SLOT) != image_slots:
        raise ValueError("conversation: the questions must hold exactly one <image> token")
    return out


def predicting(ids, token_id: int) -> list:
    """Positions whose hidden state predicts `token_id` (the position before each occurrence):
    LISA takes the [SEG] embedding there (`input_ids[:, 1:] == seg_token_idx`)."""
    return [i - 1 for i, t in enumerate(ids) if t == token_id and i > 0]
