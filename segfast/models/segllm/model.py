"""SegLLM on the LISA base: mask memory and reference-aware decoding over conversation rounds.

* Mask encoding (§4.2, §A.3; segfast.models.segllm.memory): one mask -> a mask embedding (the
  masked, box-cropped image through LLaVA's CLIP tower, its CLS token through LLaVA's projector, as
  the authors' code) and a box embedding. Encodings enter the
  LLM's input in two places: the "<mask> <box>" slots of a question (segfast.text.segllm; the
  round's `encode` names whose mask: an earlier round's target, or a mask given with the
  conversation, MRSeg-hard's "[ENCODE X]"), and, with seg_memory, right after each [SEG] of an
  answer (§A.3: teacher forcing with the ground truth in training). In inference every encoding
  of an earlier round is the model's own mask.
  As the authors' code (not the paper), each mask and box embedding is zeroed with probability
  encoding_dropout (0.5) in training and scaled by 1 - encoding_dropout in evaluation, and a
  question slot's input is its token's embedding plus the encoding (slot_embedding "add").
* Reference-aware decoding (§4.2): answers of rounds with a reference hold [REF] before [SEG]
  ("Relative to [REF], it is [SEG]."). The decoder gets two-token queries: ([REF], [SEG]) decodes
  the target (a learned [PAD] stands in for [REF] in rounds without one) and ([REF], [PAD])
  decodes the reference mask M_ref.
* Loss (eq. 1): per round L_seg(target) + L_seg(reference), L_seg = λ_bce BCE + λ_dice DICE with
  λ = 1 (LISA's per-mask definitions), averaged over the batch's rounds; plus λ_text CE.
* Trained (§5.1): the LLM (full fine-tuning with the shipped config; LoRA is an option), the
  projector (the image's and the mask embedding's), the [SEG]-to-prompt MLP (Linear, GELU,
  Linear), the [PAD] query and the box head. Frozen: CLIP (LLaVA's; mask_clip separate: the mask
  encoder's too) and the whole mask decoder.

Departures from the paper (each an option or documented):
* SAM ViT-H stands in for HIPIE-R50 (not available as a transformers/segment-anything model);
  its decoder is frozen by default as HIPIE is (train_mask_decoder trains it, as LISA does).
* The box embedding is the authors' linear layer on the normalised box (§A.3 says only "a
  positional embedding"); box_embedding "fourier" (ours) puts sin/cos features before it.
* The position after each [SEG] learns the next text token (train_after_seg): with memory slots
  after [SEG] its label would otherwise be ignored and free generation continue untrained.
* How rounds are averaged is not stated; the sum of eq. 1 is divided by the number of rounds. As
  the authors' code, training takes the mask losses of loss_rounds (2) random rounds of each
  conversation only, and adds query_l2 (1e-3) times the mean square of their decoder prompts.

Batches: LISA's plus refs (B tensors (n_b,): per round the index of its reference in masks ++
given, or -1; absent = single-round data), given (B tensors (k_b, S, S): masks that are no
round's target, optional), memory (evaluation: "own" or "ground_truth" encodings of earlier
rounds), and in each round `encode` (indices into masks ++ given, one per slot pair).
"""

from dataclasses import dataclass

import torch
from torch import nn

from segfast.config import ConfigError
from segfast.frames import score_at_original
from segfast.metrics import BoxAccuracyMeter, IoUMeter
from segfast.models.lisa.conversation import IGNORE, MEMORY_SLOT, predicting
from segfast.models.lisa.model import LISA
from segfast.models.llava import base_model, image_size
from segfast.models.llm import token_mean_kwargs
from segfast.models.segllm.memory import MaskEncoder, llava_cls, load_clip
from segfast.models.segllm.options import SegLLMOptions
from segfast.nn.losses import framed_mask_losses
from segfast.text.segllm import BOX_SLOT, MASK_SLOT, count_slots
from segfast.text.tokens import IMAGE, REF


@dataclass
class Memory:
    """One sample's encodings: after its [SEG] tokens ((n * 2, d), in order) and in its question
    slots ((k, 2, d), in order of appearance)."""

    after_seg: torch.Tensor | None = None
    slots: torch.Tensor | None = None


def as_dialogues(batch: dict) -> dict:
    """SegLLM reads one multi-round conversation per sample (batch["conversation"]). LISA-style
    data hold several single-round conversations per image (batch["conversations"]): they become
    the rounds of one conversation, in order, the image shown in the first question only (LLaVA's
    rule), so their masks stay one per [SEG] in order."""
    if "conversation" in batch or "conversations" not in batch:
        return batch
    dialogues = []
    for conversations in batch["conversations"]:
        rounds = [turn for conversation in conversations for turn in conversation]
        rounds = rounds[:1] + [{**t, "question": t["question"].replace(IMAGE, "").lstrip()} for t in rounds[1:]]
        dialogues.append(rounds)
    return {**{k: v for k, v in batch.items() if k != "conversations"}, "conversation": dialogues}


def check_options(o: SegLLMOptions) -> None:
    """The option values SegLLM knows, each error naming its key."""
    for key, known in (
        ("mask_clip", ("llava", "separate")),
        ("box_embedding", ("linear", "fourier")),
        ("slot_embedding", ("add", "replace")),
        ("seg_activation", ("gelu", "relu")),
    ):
        if getattr(o, key) not in known:
            raise ConfigError(f"model.options.{key} must be one of {', '.join(known)}, got {getattr(o, key)!r}")
    if int(o.loss_rounds) < 0:
        raise ConfigError(f"model.options.loss_rounds must be >= 0 (0: every round), got {o.loss_rounds}")
    if not 0 <= float(o.encoding_dropout) < 1:
        raise ConfigError(f"model.options.encoding_dropout must be in [0, 1), got {o.encoding_dropout}")


class SegLLM(LISA):
    OPTIONS = SegLLMOptions

    def __init__(self, cfg, device=None):
        super().__init__(cfg, device)
        o = self.options
        check_options(o)
        self.memory_slots = MaskEncoder.slots if o.seg_memory else 0
        width = self.lm.get_input_embeddings().embedding_dim
        clip = load_clip(o.clip_path, o.clip) if o.mask_clip == "separate" else None
        self.memory = MaskEncoder(clip, width, int(o.fourier_bands), o.box_embedding, image_size(self.lm))
        if o.seg_activation == "gelu":  # the [SEG]-to-prompt MLP as the authors' segmentator_predictor
            self.text_fc[1] = nn.GELU()
        self.pad_query = nn.Parameter(torch.randn(1, self.decoder.dim) * 0.02)
        self.ref_id = self.tokenizer.convert_tokens_to_ids(REF)
        self.slot_ids = [self.tokenizer.convert_tokens_to_ids(t) for t in (MASK_SLOT, BOX_SLOT)]
        self.decoder.sam.mask_decoder.requires_grad_(bool(o.train_mask_decoder))
        self.decoder.sam.mask_decoder.iou_prediction_head.requires_grad_(False)  # one mask per prompt
        if o.train_projector:  # §5.1, whatever the LISA base does with it
            base_model(self.lm).model.multi_modal_projector.requires_grad_(True)

    def tokens(self) -> list:
        return [self.seg_token, REF, MASK_SLOT, BOX_SLOT]

    # ---- sequences -----------------------------------------------------------------------------
    def encode(self, rounds: list):
        for r, turn in enumerate(rounds):
            if count_slots(turn["question"]) != len(turn.get("encode", ())):
                raise ValueError(
                    f"conversation: round {r} has {count_slots(turn['question'])} '{MASK_SLOT} {BOX_SLOT}' "
                    f"slots but encode names {len(turn.get('encode', ()))} masks"
                )
        out = super().encode(rounds)
        if self.options.train_after_seg and self.memory_slots:
            # the label after a [SEG]'s slots moves to the first slot: [SEG]'s position predicts it
            for p, kind in enumerate(out.kinds):
                if kind == MEMORY_SLOT and out.kinds[p - 1] != MEMORY_SLOT:
                    after = p + self.memory_slots
                    out.labels[p] = out.labels[after] if after < len(out.labels) else IGNORE
        return out

    def embed(self, encoded: list, feats: torch.Tensor, memory: list | None = None, left: bool = False):
        """LISA's embed with each sample's Memory: after-[SEG] encodings into the memory slots,
        question-slot encodings added to the <mask> and <box> tokens' embeddings (slot_embedding)."""
        after = None if memory is None else [m.after_seg for m in memory]
        after = None if after is None or all(a is None for a in after) else after
        embeds, attention, labels, ids = super().embed(encoded, feats, after, left)
        for b in range(len(encoded)):
            slots = None if memory is None else memory[b].slots
            where = [(ids[b] == t).nonzero()[:, 0] for t in self.slot_ids]
            n = 0 if slots is None else len(slots)
            if any(len(w) != n for w in where):
                raise ValueError(f"sample {b}: {len(where[0])} question slots but {n} encodings")
            for k, w in enumerate(where):
                if n:
                    code = slots[:, k].to(embeds.dtype)
                    embeds[b, w] = embeds[b, w] + code if self.options.slot_embedding == "add" else code
        return embeds, attention, labels, ids

    # ---- memory --------------------------------------------------------------------------------
    def encode_masks(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """(n, 2, d) encodings of (n, S, S) masks on one image; a switched-off part is zero, and
        encoding_dropout drops (training) or scales (evaluation) them as the authors' code does."""
        if len(masks) == 0:
            return image.new_zeros(0, 2, self.lm.get_input_embeddings().embedding_dim)
        out = self.memory(image, masks.bool(), embed=lambda crops: llava_cls(self.lm, crops))
        keep = torch.tensor([float(self.options.mask_encoding), float(self.options.box_encoding)], device=out.device)
        out = out * keep[None, :, None]
        p = float(self.options.encoding_dropout)
        if self.training:  # each mask and each box embedding zeroed with probability p, not rescaled
            return out * (torch.rand(out.shape[:2], device=out.device) >= p)[..., None]
        return out * (1 - p)  # its expectation

    def sample_memory(self, conversation: list, pool: torch.Tensor, seg_count: int) -> Memory:
        """A sample's Memory from the encodings `pool` of its masks ++ given masks."""
        index = [i for turn in conversation for i in turn.get("encode", ())]
        if any(not 0 <= i < len(pool) for i in index):
            raise ValueError(f"encode: indices {index} must name one of the sample's {len(pool)} masks")
        return Memory(
            after_seg=pool[:seg_count].flatten(0, 1) if self.memory_slots and seg_count else None,
            slots=pool[index] if index else None,
        )

    @staticmethod
    def pool_masks(batch: dict, b: int) -> torch.Tensor:
        masks, given = batch["masks"][b], batch.get("given")
        return masks if given is None or len(given[b]) == 0 else torch.cat([masks, given[b].to(masks.dtype)])

    # ---- decoding ------------------------------------------------------------------------------
    def queries(self, hidden: torch.Tensor, ids: list, start: int = 0) -> torch.Tensor:
        """(n, 2, dim) target queries of the [SEG] tokens at positions >= start (generation)."""
        targets, _ = self.round_queries(hidden, ids)
        late = [i for i, p in enumerate(predicting(ids, self.seg_id)) if p + 1 >= start]
        return torch.stack([targets[i] for i in late]) if late else hidden.new_zeros(0, 2, self.decoder.dim)

    def round_queries(self, hidden: torch.Tensor, ids: list) -> tuple[list, list]:
        """Per [SEG] in order: (target query (2, dim), reference query (2, dim) or None)."""
        seg_at = predicting(ids, self.seg_id)
        ref_at = predicting(ids, self.ref_id)
        h = self.text_fc(hidden[seg_at + ref_at].float())
        seg_h, ref_h = h[: len(seg_at)], h[len(seg_at) :]
        targets, refs, start, pad = [], [], -1, self.pad_query[0]
        for i, p in enumerate(seg_at):
            mine = [j for j, r in enumerate(ref_at) if start < r < p]  # a [REF] of this answer
            start = p
            ref = ref_h[mine[-1]] if mine else None
            targets.append(torch.stack([pad if ref is None else ref, seg_h[i]]))
            refs.append(None if ref is None else torch.stack([ref, pad]))
        return targets, refs

    def run(self, batch: dict, memory: list | None = None, images: tuple | None = None):
        """Teacher-forced pass, by default with the encodings of the batch's masks (and given
        masks): (LM output, per sample (target logits (n_b, S, S), reference logits (r_b, S, S),
        the rounds r_b of those references, target queries (n_b, 2, dim)))."""
        if memory is None:
            memory = [
                self.sample_memory(
                    c, self.encode_masks(batch["image"][b], self.pool_masks(batch, b)), len(batch["masks"][b])
                )
                for b, c in enumerate(batch["conversation"])
            ]
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
        results = []
        for b in range(len(encoded)):
            targets, refs = self.round_queries(out.hidden_states[-1][b], ids[b].tolist())
            which = [r for r, q in enumerate(refs) if q is not None]
            queries = torch.stack(targets) if targets else image_emb.new_zeros(0, 2, self.decoder.dim)
            results.append(
                (
                    self.decode(image_emb[b], queries if targets else []),
                    self.decode(image_emb[b], torch.stack([refs[r] for r in which]) if which else []),
                    which,
                    queries,
                )
            )
        return out, results

    def forward(self, batch: dict) -> dict:
        batch = as_dialogues(batch)
        out, results = self.run(batch)
        targets, target_logits, refs, ref_logits, queries = [], [], [], [], []
        for b, (t_logits, r_logits, which, q) in enumerate(results):
            masks, pool = batch["masks"][b], self.pool_masks(batch, b)
            if len(t_logits) != len(masks):
                raise ValueError(
                    f"masks: sample {b} has {len(masks)} target masks but its answers have "
                    f"{len(t_logits)} {self.seg_token} tokens"
                )
            ref_of = batch["refs"][b].tolist() if "refs" in batch else [-1] * len(masks)
            for r in which:
                if not 0 <= int(ref_of[r]) < len(pool):
                    raise ValueError(f"refs: sample {b} round {r} has {REF} in its answer but no reference mask")
            keep, k = list(range(len(masks))), int(self.options.loss_rounds)
            if self.training and 0 < k < len(keep):
                keep = sorted(torch.randperm(len(keep))[:k].tolist())
            kept = [r for r in which if r in keep]
            queries.append(q[keep])
            targets.append(masks[keep])
            target_logits.append(t_logits[keep])
            refs.append(pool[[int(ref_of[r]) for r in kept]] if kept else masks[:0])
            ref_logits.append(r_logits[[which.index(r) for r in kept]] if kept else r_logits[:0])
        masks = self.round_losses(target_logits, targets, ref_logits, refs, batch["valid_size"])
        losses = {"text": self.options.lambda_text * out.loss, **masks}
        q = torch.cat(queries)
        if self.options.query_l2 and len(q):  # the authors' L2 on the decoder prompts of the kept rounds
            losses["query_l2"] = float(self.options.query_l2) * q.pow(2).mean()
        return losses

    def round_losses(self, target_logits, targets, ref_logits, refs, valid_size) -> dict:
        """Eq. 1 summed per round and averaged over the batch's rounds."""
        o = self.options
        bce, dice = framed_mask_losses(target_logits, targets, valid_size)
        rounds = len(bce)
        if not rounds:  # text-only batch: zero, but still connected to the trainable decoder path
            zero = sum(p.sum() for p in self.text_fc.parameters()) * 0.0
            return {"bce": zero, "dice": zero}
        if o.reference_loss:
            ref_bce, ref_dice = framed_mask_losses(ref_logits, refs, valid_size)
            bce, dice = torch.cat([bce, ref_bce.to(bce)]), torch.cat([dice, ref_dice.to(dice)])
        return {"bce": o.lambda_bce * bce.sum() / rounds, "dice": o.lambda_dice * dice.sum() / rounds}

    # ---- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def converse(self, batch: dict, generate: bool = False, **generate_kwargs) -> list:
        """Round by round, every encoding of an earlier round being the model's own mask (given
        masks stay as given): per sample a list of {"text", "mask" (S, S) bool} per round (the
        last [SEG]'s mask; empty without one). An `encode` index i below the conversation's
        length names round i's mask, a larger one given[i - length]. generate=False keeps the
        given answers (teacher-forced text, SegLLM's evaluation); True generates each answer, and
        every generated [SEG] gets its mask encoded into the memory."""
        out = []
        s = self.decoder.image_size
        for b, conversation in enumerate(batch["conversation"]):
            one = {k: v[b : b + 1] for k, v in batch.items() if k in ("image", "clip_image", "valid_size")}
            given = batch["given"][b] if batch.get("given") is not None else None
            dialogue = self.start(one, given, length=len(conversation))
            replies = []
            for turn in conversation:
                text, logits = self.respond(dialogue, turn, generate, **generate_kwargs)
                mask = logits[-1] > 0 if len(logits) else torch.zeros(s, s, dtype=torch.bool, device=logits.device)
                replies.append({"text": text, "mask": mask})
            out.append(replies)
        return out

    def start(self, one: dict, given: torch.Tensor | None = None, length: int | None = None) -> dict:
        """A conversation about one image (a batch of one: image, clip_image, valid_size): its image
        encodings (computed once), the encodings of `given` masks (n, S, S), its rounds so far and
        the memory of their masks. `length`: the conversation's rounds when known (an `encode`
        index from `length` on names given[i - length]); None for an open chat (every index a round)."""
        s = self.decoder.image_size
        given = one["image"].new_zeros(0, s, s) if given is None else given
        return {
            "one": one,
            "images": self.encode_images(one),
            "given": self.encode_masks(one["image"][0], given),
            "length": length,
            "rounds": [],
            "per_seg": [],  # one encoding per [SEG] of the answers so far
            "per_round": [],  # one per round: its last [SEG]'s mask
        }

    @torch.no_grad()
    def respond(self, dialogue: dict, turn: dict, generate: bool = True, **generate_kwargs) -> tuple:
        """One round of `dialogue` (from start): (answer text, mask logits (n, S, S) of this
        answer's [SEG] tokens); the round and its masks' encodings join the dialogue."""
        one, rounds = dialogue["one"], dialogue["rounds"]
        per_seg, per_round = dialogue["per_seg"], dialogue["per_round"]
        s, d = self.decoder.image_size, self.lm.get_input_embeddings().embedding_dim
        length = dialogue["length"] if dialogue["length"] is not None else len(rounds) + 1
        slots = self._slot_codes(rounds + [turn], per_round, dialogue["given"], length)
        if generate:
            after = torch.cat(per_seg).flatten(0, 1) if per_seg and self.memory_slots else None
            result = self.generate(
                {**one, "conversation": [rounds + [turn]]},
                memory=[Memory(after, slots)],
                return_logits=True,
                images=dialogue["images"],
                **generate_kwargs,
            )[0]
            text, logits = result["text"], result["logits"]
            turn = {**turn, "answer": text}
        else:  # the current round's slots after its [SEG] come after its queries: zeros do not matter
            text = turn["answer"]
            n = text.count(self.seg_token)
            after = torch.cat([*per_seg, dialogue["given"].new_zeros(n, 2, d)]).flatten(0, 1)
            memory = Memory(after if self.memory_slots else None, slots)
            asked = {**one, "conversation": [rounds + [turn]]}
            _, results = self.run(asked, memory=[memory], images=dialogue["images"])
            logits = results[0][0][len(results[0][0]) - n :]
        mask = logits[-1] > 0 if len(logits) else torch.zeros(s, s, dtype=torch.bool, device=logits.device)
        if len(logits):  # one encoding per [SEG] of this answer (a generated one may have 0 or several)
            per_seg.append(self.encode_masks(one["image"][0], logits > 0))
        per_round.append(self.encode_masks(one["image"][0], mask[None]))
        rounds.append(turn)
        return text, logits

    @staticmethod
    def _slot_codes(conversation: list, per_round: list, given_codes: torch.Tensor, length: int):
        """(k, 2, d) encodings of the slots of `conversation` (its last round the current one)."""
        codes = []
        for turn in conversation:
            for i in turn.get("encode", ()):
                if i < length and i >= len(per_round):
                    raise ValueError(f"encode: round {len(conversation) - 1} refers to round {i}, not an earlier one")
                if i >= length + len(given_codes) or i < 0:
                    raise ValueError(f"encode: index {i} names no round and no given mask")
                codes.append(per_round[i][0] if i < length else given_codes[i - length])
        return torch.stack(codes) if codes else None

    @torch.no_grad()
    def evaluate(self, batch: dict, meters: dict) -> None:
        """Engine hook. Multi-round data: per-round gIoU (SegLLM's mIoU: the mean of per-sample
        IoUs), cIoU ("rounds"; "iou" pools the rounds) and Acc@0.5 of the mask's box ("rec"), in
        SAM's frame (the unpadded region), as the authors count in their decoder's 1024 frame;
        every earlier round's encoding is the model's own mask (batch memory "own", the authors' --ar_eval) or the
        ground truth ("ground_truth", their teacher-forced evaluation). Single-round benchmark
        data (original_masks): LISA's protocol at the original resolution ("iou")."""
        batch = as_dialogues(batch)
        if "original_masks" in batch:
            _, results = self.run(batch)
            score_at_original(meters["iou"], [r[0] for r in results], batch)
            return
        rounds = meters.setdefault("rounds", IoUMeter(num_rounds=int(self.options.max_rounds)))
        rec = meters.setdefault("rec", BoxAccuracyMeter(num_rounds=int(self.options.max_rounds)))
        longest = max(len(c) for c in batch["conversation"])
        if longest > rounds.state.shape[0]:
            raise ValueError(f"a conversation has {longest} rounds; set model.options.max_rounds >= {longest}")
        mode = batch.get("memory", ["own"] * len(batch["conversation"]))
        if any(m not in ("own", "ground_truth") for m in mode):
            raise ValueError(f"memory must be 'own' or 'ground_truth', got {sorted(set(mode))}")
        teacher = self.run(batch)[1] if "ground_truth" in mode else None
        own = self.converse(batch) if "own" in mode else None
        for b in range(len(batch["conversation"])):
            h, w = (int(x) for x in batch["valid_size"][b])
            preds = teacher[b][0] > 0 if mode[b] == "ground_truth" else torch.stack([r["mask"] for r in own[b]])
            for r in range(len(preds)):
                pred, gt = preds[r][None, :h, :w], batch["masks"][b][r][None, :h, :w].bool()
                rounds.update(pred, gt, round=r)
                rec.update(pred, gt, round=r)
                meters["iou"].update(pred, gt)  # all rounds pooled: what the single-round protocols read
