"""LLaVASeg's dialogue quality (Table 1): ROUGE-L and CIDEr of the reason step's answer against
reference explanations, computed by pycocoevalcap (the COCO caption evaluation code: its Rouge is
ROUGE-L with beta 1.2, its Cider is CIDEr-D with the document frequencies of the references).

The texts are lower-cased and split into words without punctuation, in Python (the toolkit's PTB
tokenizer runs Java). CIDEr depends on the whole reference set, so the meter keeps the texts,
gathers them from every process before scoring, and reports once per evaluation.
"""

import re

import torch
import torch.distributed as dist


def tokens(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


class DialogueMeter:
    """Candidate answers and their references; `state` counts them (what the engine checks and
    restores when a padding batch is undone)."""

    def __init__(self):
        self.candidates, self.references = [], []

    @property
    def state(self) -> torch.Tensor:
        return torch.tensor([len(self.candidates)], dtype=torch.int64)

    @state.setter
    def state(self, value: torch.Tensor) -> None:  # the engine undoes a padding batch's updates
        n = int(value[0])
        self.candidates, self.references = self.candidates[:n], self.references[:n]

    def update(self, candidates: list, references: list) -> None:
        """references: per candidate a list of reference texts (samples without any are skipped)."""
        if len(candidates) != len(references):
            raise ValueError(f"candidates and references must pair up, got {len(candidates)} and {len(references)}")
        for c, r in zip(candidates, references):
            if r:
                self.candidates.append(tokens(c))
                self.references.append([tokens(x) for x in r])

    def sync(self) -> "DialogueMeter":
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (self.candidates, self.references))
            self.candidates = [c for part, _ in gathered for c in part]
            self.references = [r for _, part in gathered for r in part]
        return self

    def compute(self) -> dict:
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        if not self.candidates:
            return {"ROUGE-L": float("nan"), "CIDEr": float("nan"), "samples": 0}
        res = {i: [c or "empty"] for i, c in enumerate(self.candidates)}
        gts = {i: r for i, r in enumerate(self.references)}
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
        return {"ROUGE-L": float(rouge), "CIDEr": float(cider), "samples": len(self.candidates)}
