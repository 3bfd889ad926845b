"""SegLLM on the LISA base: mask memory and reference-aware decoding over conversation rounds.

* Mask memory: after every [SEG] the input stream carries that round's mask encoding (mask and
  box embeddings, segfast.models.segllm.memory): the target mask in training (teacher forcing),
  the model's own mask at inference.
* Answers of rounds that refer to an earlier target hold [REF] before [SEG]
  ("Relative to [REF], it is [SEG]."). The decoder gets two-token queries: ([REF], [SEG])
  decodes the target (a learned [PAD] stands in for [REF] in rounds without one) and
  ([REF], [PAD]) decodes the reference mask, which is supervised with the earlier round's mask.
* Loss (the paper's eq. 1 as implemented here): L = λ_text CE + λ_bce BCE + λ_dice DICE, the mask
  terms averaged over every decoded mask, targets and reference reconstructions alike.

Batches: LISA's plus refs (B tensors (n_b,), per round the referenced round or -1).

model.options: SegLLMOptions (options.py): LISA's plus clip_path (local CLIP vision model; empty = tiny from `clip`),
fourier_bands, max_rounds (rounds the per-round meter reports).
"""

import torch
from torch import nn

from segfast.models.lisa.conversation import predicting
from segfast.models.lisa.model import LISA
from segfast.models.llm import token_mean_kwargs
from segfast.models.segllm.memory import MaskEncoder, load_clip
from segfast.models.segllm.options import SegLLMOptions
from segfast.text.tokens import REF


class SegLLM(LISA):
    OPTIONS = SegLLMOptions
    memory_slots = MaskEncoder.slots

    def __init__(self, cfg, device=None):
        super().__init__(cfg, device)
        o = self.options
        width = self.lm.get_input_embeddings().embedding_dim
        self.memory = MaskEncoder(load_clip(o.clip_path, o.clip), width, int(o.fourier_bands))
        self.pad_query = nn.Parameter(torch.randn(1, self.decoder.dim) * 0.02)
        self.ref_id = self.tokenizer.convert_tokens_to_ids(REF)

    def tokens(self) -> list:
        return [self.seg_token, REF]

    def encode_memory(self, images: torch.Tensor, masks: list) -> list:
        """Per sample (n_b * 2, d) memory of its masks (n_b, S, S)."""
        return [self.memory(images[b], m.bool()).flatten(0, 1) if len(m) else None for b, m in enumerate(masks)]

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
        """Teacher-forced pass with the given memory (default: the target masks): (LM output,
        per sample (target logits (n_b, S, S), reference logits (r_b, S, S), reference ids (r_b,)))."""
        if memory is None:
            memory = self.encode_memory(batch["image"], list(batch["masks"]))
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
            target_logits = (
                self.decode(image_emb[b], torch.stack(targets)) if targets else self.decode(image_emb[b], [])
            )
            which = [r for r, q in enumerate(refs) if q is not None]
            ref_logits = (
                self.decode(image_emb[b], torch.stack([refs[r] for r in which]))
                if which
                else self.decode(image_emb[b], [])
            )
            results.append((target_logits, ref_logits, which))
        return out, results

    def forward(self, batch: dict) -> dict:
        out, results = self.run(batch)
        logits, targets = [], []
        for b, (target_logits, ref_logits, which) in enumerate(results):
            masks, refs = batch["masks"][b], batch["refs"][b]
            if len(target_logits) != len(masks):
                raise ValueError(
                    f"masks: sample {b} has {len(masks)} target masks but its answers have "
                    f"{len(target_logits)} {self.seg_token} tokens"
                )
            for r in which:
                if int(refs[r]) < 0:
                    raise ValueError(f"refs: sample {b} round {r} has {REF} in its answer but no reference round")
            logits.append(torch.cat([target_logits, ref_logits]))
            targets.append(torch.cat([masks, masks[[int(refs[r]) for r in which]]]) if which else masks)
        return {"text": self.options.lambda_text * out.loss, **self.mask_losses(logits, targets, batch["valid_size"])}

    @torch.no_grad()
    def converse(self, batch: dict, generate: bool = False, **generate_kwargs) -> list:
        """Round by round, each round's memory being the model's own earlier masks: per sample a
        list of {"text", "mask" (S, S) bool} per round (the last [SEG]'s mask; empty without one).
        generate=False keeps the given answers (teacher-forced text, SegLLM's evaluation); True
        generates each answer, and every generated [SEG] gets its mask encoded into the memory."""
        out = []
        for b in range(len(batch["image"])):
            one = {k: v[b : b + 1] for k, v in batch.items() if k in ("image", "clip_image", "valid_size")}
            dialogue = self.start(one)
            replies = []
            for turn in batch["conversation"][b]:
                text, logits = self.respond(dialogue, turn, generate, **generate_kwargs)
                s = self.decoder.image_size
                mask = logits[-1] > 0 if len(logits) else torch.zeros(s, s, dtype=torch.bool, device=logits.device)
                replies.append({"text": text, "mask": mask})
            out.append(replies)
        return out

    def start(self, one: dict) -> dict:
        """A conversation about one image (a batch of one: image, clip_image, valid_size): its
        image encodings (computed once), rounds so far and mask memory (one encoding per [SEG])."""
        return {"one": one, "images": self.encode_images(one), "rounds": [], "memory": []}

    @torch.no_grad()
    def respond(self, dialogue: dict, turn: dict, generate: bool = True, **generate_kwargs) -> tuple:
        """One round of `dialogue` (from start): (answer text, mask logits (n, S, S) of this
        answer's [SEG] tokens); the round and its masks' encodings join the dialogue."""
        one, memory = dialogue["one"], dialogue["memory"]
        history = torch.cat(memory) if memory else None
        conversation = [dialogue["rounds"] + [turn]]
        if generate:
            result = self.generate(
                {**one, "conversation": conversation},
                memory=[history],
                return_logits=True,
                images=dialogue["images"],
                **generate_kwargs,
            )[0]
            text, logits = result["text"], result["logits"]
            turn = {**turn, "answer": text}
        else:  # the current round's memory slots come after its [SEG]: zeros do not matter
            text = turn["answer"]
            n = text.count(self.seg_token)
            current = one["image"].new_zeros(self.memory_slots * n, self.lm.get_input_embeddings().embedding_dim)
            _, results = self.run(
                {**one, "conversation": conversation},
                memory=[current if history is None else torch.cat([history, current])],
                images=dialogue["images"],
            )
            logits = results[0][0][len(results[0][0]) - n :]
        if len(logits):  # one encoding per [SEG] of this answer (a generated one may have 0 or several)
            memory.append(self.encode_memory(one["image"], [logits > 0])[0])
        dialogue["rounds"].append(turn)
        return text, logits

    @torch.no_grad()
    def evaluate(self, batch: dict, meters: dict) -> None:
        """Engine hook: per-round gIoU (SegLLM's mIoU: the mean of per-sample IoUs) and cIoU of
        round-by-round inference (meter "rounds")."""
        from segfast.metrics import IoUMeter

        meter = meters.setdefault("rounds", IoUMeter(num_rounds=int(self.options.max_rounds)))
        longest = max(len(c) for c in batch["conversation"])
        if longest > meter.state.shape[0]:
            raise ValueError(f"a conversation has {longest} rounds; set model.options.max_rounds >= {longest}")
        for b, replies in enumerate(self.converse(batch)):
            h, w = (int(x) for x in batch["valid_size"][b])
            for r, reply in enumerate(replies):
                meter.update(reply["mask"][None, :h, :w], batch["masks"][b][r][None, :h, :w].bool(), round=r)
