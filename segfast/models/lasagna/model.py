"""LaSagnA on the LISA base: answers name every asked class with <SEG> (present, one mask each)
or <NEG> (absent, no mask); training is LISA's loss over the <SEG> masks. Semantic
segmentation at inference asks for the dataset's classes in chunks (segfast.models.lasagna
.sequence) and gives each pixel the class of the highest mask logit above 0 (else ignore).

model.options: LaSagnAOptions (options.py): LISA's with seg_token <SEG>, plus neg_token and
chunk_size.
"""

import torch

from segfast.models.lasagna.options import LaSagnAOptions
from segfast.models.lisa.model import LISA
from segfast.text.lasagna import chunks, parse, question

IGNORE = 255


class LaSagnA(LISA):
    OPTIONS = LaSagnAOptions

    def tokens(self) -> list:
        return [self.seg_token, self.options.neg_token]

    @torch.no_grad()
    def segment(
        self, batch: dict, classes: list, chunk_size: int | None = None, answers: list | None = None, **generate_kwargs
    ) -> torch.Tensor:
        """(B, S, S) long label maps (IGNORE where no class fires; the padding included) from
        chunked questions over `classes`; each chunk is one batched generation. answers: a list
        that receives, per sample, the list of its chunks' answer texts."""
        b, s = len(batch["image"]), self.decoder.image_size
        best = torch.full((b, s, s), float("-inf"), device=batch["image"].device)
        label = torch.full((b, s, s), IGNORE, dtype=torch.long, device=best.device)
        images = self.encode_images(batch)  # CLIP and SAM's encoder once, not once per chunk
        texts = [[] for _ in range(b)]
        for chunk in chunks(classes, int(chunk_size or self.options.chunk_size)):
            names = [classes[c] for c in chunk]
            asked = {**batch, "conversation": [[{"question": question(names), "answer": None}]] * b}
            for i, result in enumerate(
                self.generate(asked, return_logits=True, warn=False, images=images, **generate_kwargs)
            ):
                texts[i].append(result["text"])
                fired = [name for name, present in parse(result["text"], names) if present]
                for name, logits in zip(fired, result["logits"]):  # one mask per <SEG>, in order
                    if name is None:
                        continue
                    better = (logits > best[i]) & (logits > 0)
                    best[i] = torch.where(better, logits, best[i])
                    label[i][better] = chunk[names.index(name)]
        if answers is not None:
            answers.extend(texts)
        return label

    @torch.no_grad()
    def evaluate(self, batch: dict, meters: dict) -> None:
        """Engine hook: mIoU of chunked inference against the label maps (meter "miou")."""
        from segfast.metrics import MIoUMeter

        classes = batch["classes"][0]
        meter = meters.setdefault("miou", MIoUMeter(len(classes), ignore_index=IGNORE))
        meter.update(self.segment(batch, classes), batch["label"])
