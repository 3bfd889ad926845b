"""LLaVASeg: a frozen LLaVA-style MLLM reasons about the query in a chain of thought (step 1, the
reason, asked alone; then steps 2 and 3, target and attributes, in one round, with the paper's
prompts: segfast.models.llavaseg.prompts); the MLLM's embeddings of "target. attributes" go
through an MLP to the SAM encoder's width, condition the frozen encoder through
language-aware adapters (segfast.models.llavaseg.adapters) and, projected to the prompt width,
prompt SAM's two-way mask decoder as sparse tokens.

    L = λ_bce BCE + λ_dice DICE      (1.0, 0.5; LISA's per-mask definitions)

Trainable: the MLP, the adapters, the prompt projection and SAM's mask decoder. Frozen: the
whole MLLM (never given gradients), SAM's image encoder and prompt encoder.

Batches (segfast.data.queries): image, valid_size, clip_image, query, kind, key, masks (B, 1, S, S)
and, with a chain-of-thought cache, cot (the cached records). Without one the chain runs on the
fly under no_grad; its records are kept in the batch so the evaluate hook reuses them.

model.options (LLaVASegOptions, options.py): sam_type, sam_checkpoint, sam_image_size (tiny only), llava (tiny
LLaVA fields), templates, steps, merged, max_new_tokens, system, prompt_features (see chain.py),
adapter_layers ("global" = after SAM's global-attention blocks, "last" = the last one only, or a
list of block indices), adapter_dim, adapter_heads, lambda_bce, lambda_dice.

Evaluation: gIoU / cIoU at the original resolution (LISA's protocol) and, for samples with
reference explanations, ROUGE-L and CIDEr of the reason step's answer (segfast.models.llavaseg
.dialogue, Table 1). Ablations (Table 3): steps 1 / 2 / 3, adapter_layers "last", a mixture
without ReasonSeg (its rate 0); Table 3c evaluates a LISA checkpoint on seg-queries with
lisa_prompt (the cached reason step as LISA's instruction).

Departures: the step prompts' elided middles ("(1) Please analyze the conversation...") are filled
with the steps' own sentences; each step is its own single-round conversation quoting the earlier
exchange, as the paper's prompts write it; the tokenizer of the dialogue scores is Python, not
the toolkit's Java PTB tokenizer.
"""

import re

import torch
from torch import nn

from segfast.config import ModelConfig, build_options
from segfast.frames import score_at_original
from segfast.models.lisa.decoder import PromptedSam, load_prompted_sam
from segfast.models.llavaseg.adapters import LanguageAdapters
from segfast.models.llavaseg.chain import ChainOfThought
from segfast.models.llavaseg.options import LLaVASegOptions
from segfast.models.llavaseg.prompts import Templates
from segfast.nn.losses import framed_mask_losses
from segfast.text.lisa import vocabulary
from segfast.text.synthetic import SYNTHETIC_REASONING


def words() -> list:
    """The tiny tokenizer's vocabulary: the [SEG] family's plus the chain-of-thought templates'."""
    text = re.sub(r"\{\w+\}|[.,?:']", " ", Templates().words() + " " + SYNTHETIC_REASONING)
    return sorted(set(vocabulary()) | set(text.split()) | {"'", ":"})


class LLaVASeg(nn.Module):
    OPTIONS = LLaVASegOptions

    def __init__(self, cfg: ModelConfig, device=None):
        super().__init__()
        o = self.options = build_options(self.OPTIONS, cfg.options)
        self.decoder = PromptedSam(load_prompted_sam(o.sam_type, o.sam_checkpoint, int(o.sam_image_size)))
        self.chain = ChainOfThought(cfg, o, words(), device)
        encoder = self.decoder.sam.image_encoder
        width = encoder.blocks[0].norm1.normalized_shape[0]
        self.text_mlp = nn.Sequential(nn.Linear(self.chain.width, width), nn.GELU(), nn.Linear(width, width))
        self.adapters = LanguageAdapters(encoder, o.adapter_layers, width, int(o.adapter_dim), int(o.adapter_heads))
        self.to_prompt = nn.Linear(width, self.decoder.dim)
        self._tokens = 0

    @classmethod
    def build_chain(cls, cfg: ModelConfig, device=None) -> ChainOfThought:
        """The frozen MLLM and prompts alone (what caching the chain of thought needs)."""
        return ChainOfThought(cfg, build_options(cls.OPTIONS, cfg.options), words(), device)

    # ---- engine hooks --------------------------------------------------------------------------
    def enable_gradient_checkpointing(self) -> None:
        self.adapters.checkpointing = True  # the frozen encoder blocks between adapters

    def count_tokens(self, batch: dict) -> int:
        return self._tokens

    # ---- the chain of thought ------------------------------------------------------------------
    def chain_of_thought(self, batch: dict) -> list:
        """The batch's records: cached (checked to come from this model's prompting) or generated."""
        records = batch.get("cot")
        if records is None:
            records = batch["cot"] = self.chain.run(batch["clip_image"], batch["query"], batch["kind"], batch["key"])
        stale = [r["key"] for r in records if r.get("prompting") != self.chain.prompting]
        if stale:
            raise ValueError(
                f"the chain-of-thought cache holds answers from another MLLM or other templates "
                f"(e.g. {stale[0]!r}); point data.options.cot_cache at a new directory and rerun "
                "segfast cot-cache"
            )
        return records

    # ---- masks ---------------------------------------------------------------------------------
    def mask_logits(self, batch: dict, records: list) -> list:
        """Per sample (1, S, S) mask logits prompted by its record's target and attributes."""
        embeddings, mask = self.chain.prompt_embeddings([self.chain.prompt_text(r) for r in records])
        self._tokens = int(mask.sum())
        text = self.text_mlp(embeddings)
        images = self.adapters(self.decoder.sam.image_encoder, batch["image"], text, mask)
        prompts = self.to_prompt(text)
        return [self.decoder.decode(images[b], prompts[b][mask[b]][None]) for b in range(len(records))]

    def forward(self, batch: dict) -> dict:
        logits = self.mask_logits(batch, self.chain_of_thought(batch))
        bce, dice = framed_mask_losses(logits, batch["masks"], batch["valid_size"])
        return {"bce": self.options.lambda_bce * bce.mean(), "dice": self.options.lambda_dice * dice.mean()}

    @torch.no_grad()
    def evaluate(self, batch: dict, meters: dict) -> None:
        """Engine hook: gIoU / cIoU of each sample's mask at the image's original resolution and,
        when the batch carries reference explanations, ROUGE-L / CIDEr of the reason step's
        answer ("dialogue", Table 1)."""
        records = self.chain_of_thought(batch)
        score_at_original(meters["iou"], self.mask_logits(batch, records), batch)
        if "explanations" in batch:
            from segfast.models.llavaseg.dialogue import DialogueMeter

            meters.setdefault("dialogue", DialogueMeter()).update([r["reason"] for r in records], batch["explanations"])

    @torch.no_grad()
    def segment(self, batch: dict) -> list:
        """Inference: per sample {"answer" (the reason step's reply: the MLLM's own dialogue),
        "target", "attributes", "prompt", "mask" (h, w) bool on the unpadded frame, "logits"
        (S, S) on the padded one}. The chain of thought always runs (a batch's cot is ignored)."""
        records = self.chain.run(batch["clip_image"], batch["query"], batch["kind"], batch["key"])
        logits = self.mask_logits(batch, records)
        out = []
        for b, (r, lg) in enumerate(zip(records, logits)):
            h, w = (int(x) for x in batch["valid_size"][b])
            out.append(
                {
                    "answer": r["reason"],
                    "target": r["target"],
                    "attributes": r["attributes"],
                    "prompt": self.chain.prompt_text(r),
                    "mask": lg[0, :h, :w] > 0,
                    "logits": lg[0],
                }
            )
        return out
