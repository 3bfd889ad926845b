"""LaSagnA's complex-query sequences.

    USER: <image> Can you segment the {SAMPLED NAME LIST} in this image? ASSISTANT: {P-CAT}<SEG>, {N-CAT}<NEG>, …

(the USER:/ASSISTANT: frame comes from segfast.models.lisa.conversation; `<image>` is LLaVA's
image token.) The paper's three training strategies, each a switch of `build`:

* random class list: the question names a random subset of the dataset's classes: 1 to
  `num_classes` present ones, then absent ones up to `num_classes` names (more present ones when
  absent ones run out), shuffled; off, it names present classes only,
  as LISA's semantic-segmentation data does.
* sequence augmentation: absent classes named in the question are answered `{name}<NEG>`; off,
  the answer lists present classes only.
* target-order consistency: the answer follows the question's order; off, present classes
  come first (in question order), then absent ones.

Inference over long class lists goes in chunks of `chunk_size` names (the paper's Table 6),
each chunk one question, and `parse` reads the answer back.
"""

import random

SEG, NEG = "<SEG>", "<NEG>"
QUESTION = "<image> Can you segment the {names} in this image?"


def question(names: list) -> str:
    return QUESTION.format(names=", ".join(names))


def answer(items: list) -> str:
    """items: (name, present) pairs in answer order."""
    return ", ".join(f"{name}{SEG if present else NEG}" for name, present in items)


def build(
    present: list,
    classes: list,
    rng: random.Random,
    num_classes: int = 10,
    random_class_list: bool = True,
    sequence_augmentation: bool = True,
    order_consistency: bool = True,
) -> tuple[str, str, list]:
    """(question, answer, targets): targets are the class indices answered with <SEG>, in answer
    order (one mask each). present: class indices in the image; classes: the dataset's names
    (None for unused indices)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    named = [c for c in range(len(classes)) if classes[c] is not None]
    present = [c for c in dict.fromkeys(present) if classes[c] is not None]
    if random_class_list:
        pos = rng.sample(present, min(len(present), rng.randint(1, num_classes))) if present else []
        absent = [c for c in named if c not in set(present)]
        sampled = pos + rng.sample(absent, min(len(absent), num_classes - len(pos)))
        sampled += [c for c in present if c not in pos][: num_classes - len(sampled)]  # too few absent ones
    else:
        sampled = rng.sample(present, min(len(present), num_classes))
    if not sampled:
        raise ValueError("build: no class to ask about (no present class and random_class_list is off)")
    rng.shuffle(sampled)
    keep = set(present)
    items = [(c, c in keep) for c in sampled if sequence_augmentation or c in keep]
    if not order_consistency:
        items = [i for i in items if i[1]] + [i for i in items if not i[1]]
    return (
        question([classes[c] for c in sampled]),
        answer([(classes[c], p) for c, p in items]),
        [c for c, p in items if p],
    )


def chunks(classes: list, chunk_size: int) -> list:
    """The dataset's class indices in order, `chunk_size` per question."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    named = [c for c in range(len(classes)) if classes[c] is not None]
    return [named[i : i + chunk_size] for i in range(0, len(named), chunk_size)]


def parse(text: str, names: list) -> list:
    """[(name, present)] from a generated answer, in order. Every <SEG> in the text gives one
    item, so the present items line up with the masks of the generated <SEG> tokens; a name that
    is not in `names` (a generated answer is not trusted) reads as None."""
    known = set(names)
    items = []
    for piece in text.replace("</s>", "").split(","):
        piece = piece.strip()
        segs, negs = piece.count(SEG), piece.count(NEG)
        name = piece.replace(SEG, "").replace(NEG, "").strip()
        well_formed = segs + negs == 1 and piece.endswith(SEG if segs else NEG)
        if well_formed:
            items.append((name if name in known else None, bool(segs)))
        else:
            items += [(None, True)] * segs
    return items
