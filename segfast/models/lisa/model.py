"""LISA: a LLaVA-style model answers with [SEG] tokens; the last-layer hidden state that predicts
each [SEG] goes through an MLP into SAM's mask decoder as a sparse prompt, one mask per [SEG].

    L = λ_text CE + λ_bce BCE + λ_dice DICE      (1.0, 2.0, 0.5; LISA's definitions, averaged over masks)

Trainable, as LISA's train_ds.py sets it: LoRA (model.lora: q_proj, v_proj; r 8, α 16) on the
language model, its embed_tokens and lm_head (the new tokens), the MLP (text_hidden_fcs) and
SAM's mask decoder; frozen: CLIP, LLaVA's projector (mm_projector), SAM's image and prompt
encoders (and the decoder's IoU head, which one mask per prompt never uses).

Sequences are LISA's: every conversation is one sequence `{system}USER: <image>\\n{question}
ASSISTANT: {answer}</s>` (LLaVA v1's system prompt; `<image>` between <im_start> and <im_end>
when the checkpoint uses them), and a sample holds one conversation per sampled sentence or
class (batch["conversations"]), each with the image; the SAM image embedding is computed once
per image and decodes the masks of all of its conversations. The mask losses are taken at each
image's original resolution (SAM's postprocess_masks), against batch["original_masks"].

Batches (segfast.data.conversations and its peers): image (B, 3, S, S) SAM-normalised and
padded; valid_size (B, 2) the unpadded (h, w); clip_image (B, 3, C, C) CLIP-normalised;
conversations (per sample a list of conversations, each a list of rounds, see
segfast.models.lisa.conversation) or conversation (one per sample, SegLLM's multi-round data);
masks (B tensors (n_b, S, S) bool, one per [SEG] in answer order) and original_masks (the same
at the image's resolution, (n_b, H, W)).

model.options (LISAOptions, options.py): sam_type (vit_h | vit_l | vit_b | tiny), sam_checkpoint,
sam_image_size (tiny only), llava (tiny LLaVA fields {text, vision} when model.path is empty),
lambda_text, lambda_bce, lambda_dice, seg_token, max_new_tokens, system, train_projector,
image_start_end (auto | on | off), loss_resolution (original | frame).

Departures from LISA, each an option off in the paper configuration: loss_resolution=frame.
Where LISA's code and the checkpoint differ: LISA always wraps <image> in <im_start>/<im_end>
(use_mm_start_end=True); image_start_end=auto follows the checkpoint (set on to train as LISA's
train_ds.py does from a checkpoint without them). Not reproduced: LISA cuts training sequences
at model_max_length (512, image included); segfast never cuts a conversation.
"""

import warnings

import torch
from torch import nn

from segfast.config import ConfigError, ModelConfig, build_options
from segfast.frames import logits_at_original, score_at_original
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
    uses_image_start_end,
    with_image_start_end,
)
from segfast.models.llm import LLMHooks, count_labelled, token_mean_kwargs
from segfast.nn.losses import framed_mask_losses, mask_bce_loss, mask_dice_loss
from segfast.text.lisa import vocabulary
from segfast.text.tokens import IM_END, IM_START


def conversations(batch: dict) -> list:
    """Per sample its list of conversations: batch["conversations"], or the one conversation of
    batch["conversation"] (SegLLM's multi-round data)."""
    if "conversations" in batch:
        return batch["conversations"]
    return [[c] for c in batch["conversation"]]


class LISA(LLMHooks, nn.Module):
    OPTIONS = LISAOptions
    memory_slots = 0  # SegLLM feeds mask encodings back after each [SEG]

    def __init__(self, cfg: ModelConfig, device=None):
        super().__init__()
        o = self.options = build_options(self.OPTIONS, cfg.options)
        if o.loss_resolution not in ("original", "frame"):
            raise ConfigError(f"model.options.loss_resolution must be original or frame, got {o.loss_resolution!r}")
        self.decoder = PromptedSam(load_prompted_sam(o.sam_type, o.sam_checkpoint, int(o.sam_image_size)))
        self.seg_token = o.seg_token
        self.image_start_end = uses_image_start_end(o.image_start_end, cfg.path)
        tokens = self.tokens() + ([IM_START, IM_END] if self.image_start_end else [])
        self.lm, self.tokenizer = build_llava(
            cfg, o.llava, self.words(), tokens, device, train_projector=bool(o.train_projector)
        )
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
        if self.image_start_end:  # LISA's collate_fn replaces <image> before tokenizing
            rounds = with_image_start_end(rounds)
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
        """Engine hook: the answer tokens the text loss is taken over (every conversation)."""
        return count_labelled(self.encode(c).labels for group in conversations(batch) for c in group)

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

    def _check_counts(self, logits: list, targets: list) -> None:
        for b, (pred, gt) in enumerate(zip(logits, targets)):
            if len(pred) != len(gt):
                raise ValueError(
                    f"masks: sample {b} has {len(gt)} target masks but its answers have {len(pred)} "
                    f"{self.seg_token} tokens"
                )

    def _weighted(self, bce: torch.Tensor, dice: torch.Tensor) -> dict:
        o = self.options
        if not len(bce):  # text-only batch: zero, but still connected to the trainable decoder path
            zero = sum(p.sum() for p in self.text_fc.parameters()) * 0.0
            return {"bce": zero, "dice": zero}
        return {"bce": o.lambda_bce * bce.mean(), "dice": o.lambda_dice * dice.mean()}

    def mask_losses(self, logits: list, targets: list, valid_size: torch.Tensor) -> dict:
        """λ_bce BCE + λ_dice DICE averaged over every mask of the batch, in SAM's frame on the
        unpadded region (targets (n_b, S, S))."""
        self._check_counts(logits, targets)
        return self._weighted(*framed_mask_losses(logits, targets, valid_size))

    def original_mask_losses(self, logits: list, targets: list, valid_size: torch.Tensor) -> dict:
        """λ_bce BCE + λ_dice DICE averaged over every mask of the batch at each image's original
        resolution (targets (n_b, H, W)): the logits cropped to the unpadded frame and resized
        back, as LISA's postprocess_masks does before its losses."""
        self._check_counts(logits, targets)
        bce, dice = [], []
        for b, (pred, gt) in enumerate(zip(logits, targets)):
            if len(pred):
                at = logits_at_original(pred, valid_size[b], gt.shape[-2:])
                bce.append(mask_bce_loss(at, gt))
                dice.append(mask_dice_loss(at, gt))
        return self._weighted(torch.cat(bce) if bce else torch.zeros(0), torch.cat(dice) if dice else torch.zeros(0))

    def run(self, batch: dict, memory: list | None = None, images: tuple | None = None):
        """Teacher-forced pass over every conversation: (LM output, mask logits per sample
        (n_b, S, S), its conversations' [SEG] masks in order); `images` from encode_images when
        the caller already has them."""
        feats, image_emb = images or self.encode_images(batch)
        groups = conversations(batch)
        owner = [b for b, group in enumerate(groups) for _ in group]
        encoded = [self.encode(c) for group in groups for c in group]
        embeds, attention, labels, ids = self.embed(encoded, feats[owner], memory)
        out = self.lm(
            inputs_embeds=embeds,
            attention_mask=attention,
            labels=labels,
            output_hidden_states=True,
            **token_mean_kwargs(batch),
        )
        hidden = out.hidden_states[-1]
        queries = [[] for _ in groups]
        for row, b in enumerate(owner):
            queries[b].append(self.queries(hidden[row], ids[row].tolist()))
        logits = [self.decode(image_emb[b], torch.cat(q) if q else q) for b, q in enumerate(queries)]
        return out, logits

    def forward(self, batch: dict) -> dict:
        out, logits = self.run(batch)
        if self.options.loss_resolution == "original":
            if "original_masks" not in batch:
                raise ValueError(
                    "model.options.loss_resolution=original needs data with original_masks (the targets at "
                    "each image's size); this reader gives frame masks only: set loss_resolution=frame"
                )
            masks = self.original_mask_losses(logits, batch["original_masks"], batch["valid_size"])
        else:
            masks = self.mask_losses(logits, batch["masks"], batch["valid_size"])
        return {"text": self.options.lambda_text * out.loss, **masks}

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
        """Answers the last question of each sample's (last) conversation (its answer, if any, is
        ignored) by batched greedy generation; then one pass over prompt + answer gives a mask per
        generated [SEG]. Returns per sample {"text", "ids" (the answer's token ids), "masks" (n, h, w)
        bool on the unpadded frame, and with return_logits "logits" (n, S, S) on the padded frame}.
        Warns when a sample's answer has no [SEG] (its masks are then empty, not silently reused).
        memory: per sample the mask memory of the history's [SEG] tokens (SegLLM). warn=False
        for answers that may rightly hold none (LaSagnA's all-<NEG> chunks). images: from
        encode_images, to reuse across calls on the same images."""
        prompts = [[*group[-1][:-1], {**group[-1][-1], "answer": None}] for group in conversations(batch)]
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
                {
                    "text": text,
                    "ids": answer,
                    "masks": logits[:, :h, :w] > 0,
                    **({"logits": logits} if return_logits else {}),
                }
            )
        return results

    @torch.no_grad()
    def evaluate(self, batch: dict, meters: dict) -> None:
        """Engine hook: gIoU / cIoU of the masks at the image's original resolution, the answer
        teacher-forced as LISA's validation does (one mask per [SEG]); a benchmark whose samples
        say generate (gRefCOCO: a query may have no target) is scored on the generated answer, the
        union of its masks (none: empty) being the prediction."""
        ignore = batch.get("original_ignore")
        if isinstance(ignore, list) and None in ignore:  # a mixture's members without a benchmark (VQA, ...)
            scored = [i for i, x in enumerate(ignore) if x is not None]
            if not scored:
                return
            batch = pick(batch, scored)
        if any(batch.get("generate") or []):
            logits = [union(r["logits"]) for r in self.generate(batch, return_logits=True, warn=False)]
        else:
            _, logits = self.run(batch)
        score_at_original(meters["iou"], logits, batch)


def pick(batch: dict, rows: list) -> dict:
    """Samples `rows` of a collated batch (per-sample tensors and lists; other values as they are)."""
    n = len(batch["image"])

    def cut(value):
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == n:
            return value[rows]
        return [value[i] for i in rows] if isinstance(value, list) and len(value) == n else value

    return {k: cut(v) for k, v in batch.items()}


def union(logits: torch.Tensor) -> torch.Tensor:
    """(1, S, S) logits of the union of n masks (n, S, S): their maximum; -1 (empty) for none."""
    if len(logits):
        return logits.amax(0, keepdim=True)
    return torch.full((1, *logits.shape[1:]), -1.0, device=logits.device)
