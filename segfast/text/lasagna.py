"""LaSagnA's complex-query sequences (§3.3-3.4).

    USER: <image>\nCan you segment the {SAMPLED NAME LIST} in this image? ASSISTANT: {P-CAT}<SEG>, {N-CAT}<NEG>, ….

(the USER:/ASSISTANT: frame comes from segfast.models.lisa.conversation; `<image>` is LLaVA's
image token.) The paper's training strategies (Table 5's rows), each a switch of `build`:

* random class list (§3.4 "random classes list"): the question names a list drawn anew for every
  use of the image; off, it names the dataset's whole class list (Table 5's "+ class list").
  `sampling` says how the list is drawn: "paper", a random subset of `num_classes` names of the
  complete list, "without considering if they encompass all existent objects"; "code", every
  present class plus random absent ones up to `num_classes` (the released get_sample_classes).
* sequence augmentation: absent classes named in the question are answered `{name}<NEG>`; off,
  the answer lists present classes only.
* target-order consistency: the answer follows the question's order; off, the answer's order
  is an independent shuffle.

Inference asks a dataset's class list in chunks (`chunks`; one chunk of all N by default, the
paper's best, Table 6), and `parse` reads an answer back.
"""

import random

SEG, NEG = "<SEG>", "<NEG>"
QUESTION = "<image>\nCan you segment the {names} in this image?"  # "<image>\n" as every question of the released code
SAMPLINGS = ("paper", "code")


def question(names: list) -> str:
    return QUESTION.format(names=", ".join(names))


def answer(items: list) -> str:
    """items: (name, present) pairs in answer order; the paper's answer ends with a full stop."""
    return ", ".join(f"{name}{SEG if present else NEG}" for name, present in items) + "."


def class_list(present: list, named: list, rng: random.Random, num_classes: int, sampling: str) -> list:
    """The random class list (indices) of one use of an image, in random order."""
    if sampling == "paper":
        asked = rng.sample(named, min(num_classes, len(named)))
    else:  # the released code: every present class, absent ones up to num_classes
        absent = [c for c in named if c not in set(present)]
        if len(named) <= num_classes:
            asked = list(named)
        elif len(present) >= num_classes:  # its 40 present + 20 absent of 80, scaled
            asked = rng.sample(present, num_classes // 2) + rng.sample(absent, min(len(absent), num_classes // 4))
        else:
            asked = present + rng.sample(absent, num_classes - len(present))
    rng.shuffle(asked)
    return asked


def build(
    present: list,
    classes: list,
    rng: random.Random,
    num_classes: int = 80,
    random_class_list: bool = True,
    sampling: str = "paper",
    sequence_augmentation: bool = True,
    order_consistency: bool = True,
) -> tuple[str, str, list]:
    """(question, answer, targets): targets are the class indices answered with <SEG>, in answer
    order (one mask each). present: class indices in the image; classes: the dataset's names
    (None for unused indices)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    named = [c for c in range(len(classes)) if classes[c] is not None]
    present = [c for c in dict.fromkeys(present) if 0 <= c < len(classes) and classes[c] is not None]
    if random_class_list:
        asked = class_list(present, named, rng, num_classes, sampling)
    else:  # Table 5's "+ class list": the dataset's whole list (in random order, as the released code asks it)
        asked = list(named)
        rng.shuffle(asked)
    keep = set(present)
    items = [(c, c in keep) for c in asked if sequence_augmentation or c in keep]
    if not order_consistency:
        rng.shuffle(items)
    return (
        question([classes[c] for c in asked]),
        answer([(classes[c], p) for c, p in items]),
        [c for c, p in items if p],
    )


def chunks(classes: list, chunk_size: int = 0) -> list:
    """The dataset's class indices in order, `chunk_size` per question (0: all in one)."""
    if chunk_size < 0:
        raise ValueError(f"chunk_size must be >= 0 (0: every class in one question), got {chunk_size}")
    named = [c for c in range(len(classes)) if classes[c] is not None]
    size = chunk_size or len(named) or 1
    return [named[i : i + size] for i in range(0, len(named), size)]


def parse(text: str, names: list) -> list:
    """[(name, present)] from a generated answer, in order. Every <SEG> in the text gives one
    item, so the present items line up with the masks of the generated <SEG> tokens; a name that
    is not in `names` (a generated answer is not trusted) reads as None."""
    known = set(names)
    items = []
    text = text.replace("</s>", "").strip()
    text = text[:-1] if text.endswith(".") else text
    for piece in text.split(","):
        piece = piece.strip()
        segs, negs = piece.count(SEG), piece.count(NEG)
        name = piece.replace(SEG, "").replace(NEG, "").strip()
        well_formed = segs + negs == 1 and piece.endswith(SEG if segs else NEG)
        if well_formed:
            items.append((name if name in known else None, bool(segs)))
        else:
            items += [(None, True)] * segs
    return items
