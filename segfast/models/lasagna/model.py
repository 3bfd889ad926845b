"""LaSagnA on the LISA base: answers name every asked class with <SEG> (present, one mask each)
or <NEG> (absent, no mask); training is LISA's loss over the <SEG> masks (λ_bce 1.0 and λ_dice
0.5, §4.1), on semantic segmentation in the complex-query format (segfast.data.semantic),
referring and reasoning data with <SEG> answers (segfast.data.conversations, seg_token <SEG>)
and LLaVA-Instruct conversations (segfast.data.vqa).

Semantic segmentation at inference asks each sample's own class list in chunks (by default all
N in one question, Table 6), generating up to as many tokens as the chunk's longest possible
answer (every class named, counted with the tokenizer); classes the answer never names are
reported in a warning, never silently scored as absent. Each pixel takes the class of the
highest mask logit above 0 at the image's original resolution (else ignore). Referring and
reasoning benchmarks are scored as LISA scores them (teacher-forced <SEG>.; gRefCOCO generated).

model.options: LaSagnAOptions (options.py): LISA's with seg_token <SEG>, plus neg_token,
chunk_size, unlabelled_as_first_class; lambda_bce defaults to the paper's 1.0 (the released code's 2.0 is an option).

Where the paper and the released code differ, segfast follows the paper and keeps the code's
choice as an option: λ_bce (2.0: lambda_bce), the class list (every present class plus random
absent ones: the dataset's sampling=code). Not the code's: its own tokens (<ins>, <no_ins>,
<cat_start>, <semantic>) and question templates (the paper's format is used) and its fuzzy
matching of unknown generated names to the closest class (segfast drops them). The code's mIoU is
kept, because test_sem.py computed the paper's numbers: its argmax over clamped mask logits labels
a pixel no class fires as class 0, and its target, built the same way, scores unlabelled pixels
as class 0 (unlabelled_as_first_class=false leaves both out, the standard mIoU).
"""

import warnings

import torch

from segfast.frames import logits_at_original
from segfast.models.lasagna.options import LaSagnAOptions
from segfast.models.lisa.model import LISA, pick
from segfast.text.lasagna import answer, chunks, parse, question

IGNORE = 255


class LaSagnA(LISA):
    OPTIONS = LaSagnAOptions

    def tokens(self) -> list:
        return [self.seg_token, self.options.neg_token]

    def answer_budget(self, names: list) -> int:
        """New tokens for the longest answer to a question about `names` (every class named, as
        the tokenizer writes it) and its </s>."""
        text = " " + answer([(n, True) for n in names])
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1

    @torch.no_grad()
    def segment(
        self,
        batch: dict,
        classes: list | None = None,
        chunk_size: int | None = None,
        answers: list | None = None,
        **generate_kwargs,
    ):
        """Per sample a (H, W) long label map at the size of its original_label (else its
        unpadded frame), IGNORE where no asked class fires, from questions over the sample's own
        class list (classes: per sample; default batch["classes"]), chunk_size per question (0:
        all). Each chunk index is one batched generation over the samples that have it. answers:
        a list that receives, per sample, the list of its chunks' answer texts."""
        classes = classes if classes is not None else batch["classes"]
        size = int(self.options.chunk_size if chunk_size is None else chunk_size)
        plans = [chunks(c, size) for c in classes]
        original = batch.get("original_label")
        sizes = [
            tuple(original[i].shape) if original is not None else tuple(batch["valid_size"][i].tolist())
            for i in range(len(classes))
        ]
        device = batch["image"].device
        best = [torch.full(s, float("-inf"), device=device) for s in sizes]
        label = [torch.full(s, IGNORE, dtype=torch.long, device=device) for s in sizes]
        feats, embeddings = self.encode_images(batch)  # CLIP and SAM's encoder once, not once per chunk
        texts = [[] for _ in classes]
        for j in range(max(len(p) for p in plans)):
            rows = [i for i, p in enumerate(plans) if j < len(p)]
            names = {i: [classes[i][c] for c in plans[i][j]] for i in rows}
            asked = {
                **pick(batch, rows),
                "conversations": [[[{"question": question(names[i]), "answer": None}]] for i in rows],
            }
            results = self.generate(
                asked,
                max_new_tokens=max(self.answer_budget(names[i]) for i in rows),
                return_logits=True,
                warn=False,
                images=(feats[rows], embeddings[rows]),
                **generate_kwargs,
            )
            for i, result in zip(rows, results):
                texts[i].append(result["text"])
                items = parse(result["text"], names[i])
                self._warn_unanswered(i, names[i], items, result["text"])
                fired = [name for name, present in items if present]
                at = logits_at_original(result["logits"], batch["valid_size"][i], sizes[i])
                for name, logits in zip(fired, at):  # one mask per <SEG>, in order
                    if name is None:
                        continue
                    better = (logits > best[i]) & (logits > 0)
                    best[i] = torch.where(better, logits, best[i])
                    label[i][better] = plans[i][j][names[i].index(name)]
        if answers is not None:
            answers.extend(texts)
        return label

    @staticmethod
    def _warn_unanswered(sample: int, names: list, items: list, text: str) -> None:
        answered = {name for name, _ in items if name is not None}
        missing = [n for n in names if n not in answered]
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            warnings.warn(
                f"sample {sample}: the answer names {len(names) - len(missing)} of the {len(names)} classes asked "
                f"(truncated or skipped); never answered, so never predicted: {shown} (answer ends {text[-60:]!r})",
                stacklevel=3,
            )

    @torch.no_grad()
    def evaluate(self, batch: dict, meters: dict) -> None:
        """Engine hook: semantic samples (those with a class list) update the mIoU meter of their
        label space ("miou/<format>") from segment() against original_label; the others are scored
        as LISA scores referring and reasoning benchmarks (meter "iou")."""
        from segfast.metrics import MIoUMeter

        n = len(batch["image"])
        semantic = [i for i in range(n) if (batch.get("classes") or [None] * n)[i] is not None]
        others = [i for i in range(n) if i not in semantic]
        if others:
            super().evaluate(pick(batch, others), meters)
        if not semantic:
            return
        for k, predicted in enumerate(self.segment(pick(batch, semantic))):
            i = semantic[k]
            space, classes = batch["label_space"][i], batch["classes"][i]
            meter = meters.setdefault(f"miou/{space}", MIoUMeter(len(classes), ignore_index=IGNORE))
            if meter.num_classes != len(classes):
                raise ValueError(
                    f"label_space {space!r}: a sample has {len(classes)} classes, the meter {meter.num_classes}"
                )
            target = batch["original_label"][i].to(predicted.device)
            if self.options.unlabelled_as_first_class:  # test_sem.py's argmax of all-zero one-hot maps
                predicted = predicted.masked_fill(predicted == IGNORE, 0)
                target = target.masked_fill(target == IGNORE, 0)
            meter.update(predicted, target)
