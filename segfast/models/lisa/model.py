"""LISA: a LLaVA-style model answers with [SEG] tokens; the last-layer hidden state that predicts
each [SEG] goes through an MLP into SAM's mask decoder as a sparse prompt, one mask per [SEG].

    L = λ_text CE + λ_bce BCE + λ_dice DICE      (1.0, 2.0, 0.5; LISA's definitions, averaged over masks)

Trainable: LoRA on the LLM, the embeddings and LM head (new tokens), LLaVA's projector, the
MLP and SAM's mask decoder; frozen: CLIP, SAM's image and prompt encoders.

Batches (segfast.data.conversations): image (B, 3, S, S) SAM-normalised and padded; valid_size
(B, 2) the unpadded (h, w); clip_image (B, 3, C, C) CLIP-normalised; conversation (B lists of
rounds, see segfast.models.lisa.conversation); masks (B tensors (n_b, S, S) bool, one per
[SEG] in answer order).

model.options (LISAOptions, options.py): sam_type (vit_h | vit_l | vit_b | tiny), sam_checkpoint, sam_image_size
(tiny only), llava (tiny LLaVA fields {text, vision} when model.path is empty), lambda_text,
lambda_bce, lambda_dice, seg_token, max_new_tokens, system.
"""

import warnings

import torch
from torch import nn

from segfast.config import ModelConfig, build_options
from segfast.frames import score_at_original
from segfast.models.lisa.conversation import Encoded, encode, predicting
from segfast.models.lisa.decoder import PromptedSam, load_prompted_sam
from segfast.models.lisa.options import LISAOptions
from segfast.models.llava import (
    IMAGE,
    build_llava,
    conversation_embeds,
    greedy_answers,
    image_features,
    image_token_count,
)
from segfast.models.llm import LLMHooks, count_labelled, token_mean_kwargs
from segfast.nn.losses import framed_mask_losses
from segfast.text.lisa import vocabulary


class LISA(LLMHooks, nn.Module):
    OPTIONS = LISAOptions
    memory_slots = 0  # SegLLM feeds mask encodings back after each [SEG]

    def __init__(self, cfg: ModelConfig, device=None):
        super().__init__()
        o = self.options = build_options(self.OPTIONS, cfg.options)
        self.decoder = PromptedSam(load_prompted_sam(o.sam_type, o.sam_checkpoint, int(o.sam_image_size)))
        self.seg_token = o.seg_token
        self.lm, self.tokenizer = build_llava(cfg, o.llava, self.words(), self.tokens(), device)
        d = self.lm.get_input_embeddings().embedding_dim
        # LISA's text_hidden_fcs
        self.text_fc = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, self.decoder.dim))
        self.seg_id = self.tokenizer.convert_tokens_to_ids(self.seg_token)
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE)
        self.image_slots = image_token_count(self.lm)
        self._tokens = 0

    # ---- vocabulary ----------------------------------------------------------------------------
    def tokens(self) -> list:
        return [self.seg_token]

    def words(self) -> list:
        return vocabulary()

    # ---- sequences -----------------------------------------------------------------------------
    def encode(self, rounds: list) -> Encoded:
        return encode(
            self.tokenizer,
            rounds,
            image_token_id=self.image_token_id,
            image_slots=self.image_slots,
            memory_after={self.seg_id} if self.memory_slots else (),
            memory_slots=self.memory_slots,
            system=self.options.system,
        )

    def encode_images(self, batch: dict) -> tuple:
        """(LLaVA image features (B, n, d), SAM image embeddings (B, C, h, w)): computed once per
        batch and shared by every pass over it (generation, chunks, rounds)."""
        return image_features(self.lm, batch["clip_image"]), self.decoder.embed(batch["image"])

    def embed(self, encoded: list, feats: torch.Tensor, memory: list | None = None, left: bool = False):
        """conversation_embeds with this model's LLM; counts the tokens for the engine."""
        embeds, attention, labels, ids = conversation_embeds(
            self.lm, self.tokenizer.pad_token_id, encoded, feats, memory, left
        )
        self._tokens = int(attention.sum())
        return embeds, attention, labels, ids

    def count_targets(self, batch: dict) -> int:
        """Engine hook: the answer tokens the text loss is taken over."""
        return count_labelled(self.encode(c).labels for c in batch["conversation"])

    # ---- masks ---------------------------------------------------------------------------------
    def queries(self, hidden: torch.Tensor, ids: list, start: int = 0) -> torch.Tensor:
        """(n, 1, dim) decoder prompts of one sequence: the hidden states predicting its [SEG]
        tokens at positions >= start."""
        return self.text_fc(hidden[[p for p in predicting(ids, self.seg_id) if p + 1 >= start]].float())[:, None]

    def decode(self, embedding: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        if len(queries) == 0:
            s = self.decoder.image_size
            return torch.zeros(0, s, s, device=embedding.device)
        return self.decoder.decode(embedding, queries)

    def mask_losses(self, logits: list, targets: list, valid_size: torch.Tensor) -> dict:
        """λ_bce BCE + λ_dice DICE averaged over every mask of the batch, on the unpadded region."""
        for b, (pred, gt) in enumerate(zip(logits, targets)):
            if len(pred) != len(gt):
                raise ValueError(
                    f"masks: sample {b} has {len(gt)} target masks but its answer has {len(pred)} "
                    f"{self.seg_token} tokens"
                )
        bce, dice = framed_mask_losses(logits, targets, valid_size)
        o = self.options
        if not len(bce):  # text-only batch: zero, but still connected to the trainable decoder path
            zero = sum(p.sum() for p in self.text_fc.parameters()) * 0.0
            return {"bce": zero, "dice": zero}
        return {"bce": o.lambda_bce * bce.mean(), "dice": o.lambda_dice * dice.mean()}

    def run(self, batch: dict, memory: list | None = None, images: tuple | None = None):
        """Teacher-forced pass: (LM output, mask logits per sample (n_b, S, S)); `images` from
        encode_images when the caller already has them."""
        feats, image_emb = images or self.encode_images(batch)
        encoded = [self.encode(c) for c in batch["conversation"]]
        embeds, attention, labels, ids = self.embed(encoded, feats, memory)
        out = self.lm(
            inputs_embeds=embeds,
            attention_mask=attention,
            labels=labels,
            output_hidden_states=True,
            **token_mean_kwargs(batch),
        )
        hidden = out.hidden_states[-1]
        logits = [self.decode(image_emb[b], self.queries(hidden[b], ids[b].tolist())) for b in range(len(encoded))]
        return out, logits

    def forward(self, batch: dict) -> dict:
        out, logits = self.run(batch)
        return {
            "text": self.options.lambda_text * out.loss,
            **self.mask_losses(logits, batch["masks"], batch["valid_size"]),
        }

    # ---- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        batch: dict,
        max_new_tokens: int | None = None,
        return_logits: bool = False,
        memory: list | None = None,
        warn: bool = True,
        images: tuple | None = None,
        **generate_kwargs,
    ) -> list:
        """Answers the last question of each conversation (its answer, if any, is ignored) by
        batched greedy generation; then one pass over prompt + answer gives a mask per generated
        [SEG]. Returns per sample {"text", "masks" (n, h, w) bool on the unpadded frame, and with
        return_logits "logits" (n, S, S) on the padded frame}. Warns
        when a sample's answer has no [SEG] (its masks are then empty, not silently reused).
        memory: per sample the mask memory of the history's [SEG] tokens (SegLLM). warn=False
        for answers that may rightly hold none (LaSagnA's all-<NEG> chunks). images: from
        encode_images, to reuse across calls on the same images."""
        prompts = [[*c[:-1], {**c[-1], "answer": None}] for c in batch["conversation"]]
        encoded = [self.encode(p) for p in prompts]
        feats, image_emb = images or self.encode_images(batch)
        embeds, attention, _, _ = self.embed(encoded, feats, memory, left=True)
        answers = greedy_answers(
            self.lm,
            self.tokenizer,
            embeds,
            attention,
            max_new_tokens or int(self.options.max_new_tokens),
            **generate_kwargs,
        )
        full = []
        for enc, answer in zip(encoded, answers):
            e = Encoded(list(enc.ids), list(enc.labels), list(enc.kinds))
            e.extend(answer, False)
            full.append(e)
        embeds, attention, _, ids = self.embed(full, feats, memory)
        hidden = self.lm(inputs_embeds=embeds, attention_mask=attention, output_hidden_states=True).hidden_states[-1]
        results = []
        for b, answer in enumerate(answers):
            text = self.tokenizer.decode(answer, skip_special_tokens=False)
            logits = self.decode(image_emb[b], self.queries(hidden[b], ids[b].tolist(), len(encoded[b].ids)))
            if len(logits) == 0 and warn:
                warnings.warn(
                    f"sample {b}: no {self.seg_token} token was generated (answer {text!r}); it gets no mask",
                    stacklevel=2,
                )
            h, w = (int(x) for x in batch["valid_size"][b])
            results.append(
                {"text": text, "masks": logits[:, :h, :w] > 0, **({"logits": logits} if return_logits else {})}
            )
        return results

    @torch.no_grad()
    def evaluate(self, batch: dict, meters: dict) -> None:
        """Engine hook: gIoU / cIoU of every [SEG] mask at the image's original resolution, the
        answers teacher-forced as LISA's validation does."""
        _, logits = self.run(batch)
        score_at_original(meters["iou"], logits, batch)
