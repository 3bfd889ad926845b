"""The frozen MLLM's side of LLaVASeg: the chain of thought by greedy generation, and the MLLM's
embeddings of the resulting target + attribute text (the segmentation prompt).

The MLLM is a LLaVA-style model (segfast.models.llava: a local LlavaForConditionalGeneration, or
a tiny random one) with every parameter frozen and kept in eval mode: no LoRA, no new tokens,
so its dialogue is exactly the original model's.
"""

import hashlib
import json
from dataclasses import asdict

import torch
from torch import nn

from segfast.config import ConfigError, LoraConfig, ModelConfig
from segfast.models.lisa.conversation import encode
from segfast.models.llava import (
    IMAGE,
    base_model,
    build_llava,
    conversation_embeds,
    greedy_answers,
    image_features,
    image_token_count,
)
from segfast.models.llavaseg.prompts import (
    REASONING,
    Templates,
    check_kind,
    fallback_target,
    parse_guided,
    parse_target,
    reason_question,
    simulated_answer,
)

PROMPT_FEATURES = ("hidden", "input")


class ChainOfThought(nn.Module):
    """options (LLaVASegOptions): templates (Templates fields to override), steps, merged, max_new_tokens, system,
    prompt_features ("hidden": the MLLM's last-layer states of the prompt text read alone;
    "input": its input token embeddings), llava (tiny LLaVA fields when model.path is empty)."""

    def __init__(self, cfg: ModelConfig, options, words, device=None):
        super().__init__()
        if cfg.lora.enabled:
            raise ConfigError(
                "model.lora.enabled: LLaVASeg keeps the MLLM frozen (its dialogue ability is the point); "
                "set model.lora.enabled=false"
            )
        if options.prompt_features not in PROMPT_FEATURES:
            raise ValueError(
                f"model.options.prompt_features must be one of {PROMPT_FEATURES}, got {options.prompt_features!r}"
            )
        self.templates = Templates.of(options.templates)
        if int(options.steps) not in (1, 2, 3):
            raise ValueError(f"model.options.steps must be 1, 2 or 3 (Table 3a), got {options.steps}")
        self.merged, self.system, self.steps = bool(options.merged), options.system, int(options.steps)
        self.max_new_tokens, self.features = int(options.max_new_tokens), options.prompt_features
        frozen = ModelConfig(**{**cfg.__dict__, "lora": LoraConfig(enabled=False)})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a tiny random MLLM is the same one wherever it is built (cache, training)
            self.lm, self.tokenizer = build_llava(frozen, options.llava, list(words), [], device)
        self.lm.requires_grad_(False).eval()
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE)
        self.image_slots = image_token_count(self.lm)
        self.source = cfg.path or "tiny"
        self.prompting = self._fingerprint()

    def train(self, mode: bool = True):
        super().train(mode)
        self.lm.eval()  # frozen: no dropout, ever
        return self

    @property
    def width(self) -> int:
        return self.lm.get_input_embeddings().embedding_dim

    def _fingerprint(self) -> str:
        """What the cached answers depend on: the MLLM, the templates, merging, the length limit."""
        what = {
            "model": self.source,
            "templates": asdict(self.templates),
            "merged": self.merged,
            "steps": self.steps,
            "system": self.system,
            "max_new_tokens": self.max_new_tokens,
        }
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]

    # ---- generation ----------------------------------------------------------------------------
    def answer(self, conversations: list, feats: torch.Tensor) -> list:
        """The greedy answer (text) to the last question of each conversation, image features
        (B, slots, d) in its <image> slots."""
        encoded = [
            encode(
                self.tokenizer, c, image_token_id=self.image_token_id, image_slots=self.image_slots, system=self.system
            )
            for c in conversations
        ]
        embeds, attention, _, _ = conversation_embeds(self.lm, self.tokenizer.pad_token_id, encoded, feats, left=True)
        answers = greedy_answers(self.lm, self.tokenizer, embeds, attention, self.max_new_tokens)
        return [self.tokenizer.decode(a, skip_special_tokens=True).strip() for a in answers]

    @torch.no_grad()
    def run(self, clip_images: torch.Tensor, queries: list, kinds: list, keys: list) -> list:
        """One record per query: {"reason" (step 1's answer, the conversational reply), "target",
        "attributes", "parsed" (False when a fallback was used), "dialogue" (every step's
        conversation), "prompting" (a fingerprint of the MLLM and templates)}. Step 1 is asked
        alone (simulated for short queries); steps 2 and 3 follow in one round (merged) or two."""
        if not (len(queries) == len(kinds) == len(keys) == len(clip_images)):
            raise ValueError(
                f"queries, kinds, keys and clip_images must have one entry per sample, got "
                f"{len(queries)}, {len(kinds)}, {len(keys)}, {len(clip_images)}"
            )
        for k in kinds:
            check_kind(k)
        feats = image_features(self.lm, clip_images)
        t = self.templates
        questions = [reason_question(q, t) for q in queries]
        reasoning = [b for b, k in enumerate(kinds) if k == REASONING]
        reasons = [simulated_answer(q, key, t) for q, key in zip(queries, keys)]
        for b, text in zip(reasoning, self.ask([questions[b] for b in reasoning], feats[reasoning])):
            reasons[b] = text
        dialogue = [[{"question": q, "answer": a}] for q, a in zip(questions, reasons)]
        records = [
            {"reason": a, "target": "", "attributes": "", "parsed": True, "dialogue": d}
            for a, d in zip(reasons, dialogue)
        ]
        if self.steps >= 2:
            template = t.merged if self.steps == 3 and self.merged else t.target
            asked = [template.format(question=q, answer=a) for q, a in zip(questions, reasons)]
            for b, text in enumerate(self.ask(asked, feats)):
                dialogue[b].append({"question": asked[b], "answer": text})
                if template is t.merged:
                    records[b].update(parse_guided(text))
                else:
                    records[b].update(target=parse_target(text), parsed=bool(parse_target(text)))
        for r, q, k in zip(records, queries, kinds):  # step 3 asks about the name the record holds
            if not r["target"]:
                r.update(target=fallback_target(q, k, r["reason"]), parsed=False)
        if self.steps == 3 and not self.merged:
            asked = [t.attributes.format(target=r["target"]) for r in records]
            for b, text in enumerate(self.ask(asked, feats)):
                dialogue[b].append({"question": asked[b], "answer": text})
                records[b]["attributes"] = " ".join(text.split())
        for r in records:
            r["prompting"] = self.prompting
        return records

    def ask(self, questions: list, feats: torch.Tensor) -> list:
        """The greedy answers to single-round questions about each image (the <image> first)."""
        if not questions:
            return []
        return self.answer([[{"question": f"{IMAGE} {q}", "answer": None}] for q in questions], feats)

    # ---- the segmentation prompt ---------------------------------------------------------------
    def prompt_text(self, record: dict) -> str:
        """What prompts the segmenter: step 1's answer, the target, or the target with its
        attributes (steps 1, 2, 3)."""
        if self.steps == 1:
            text = record["reason"]
        elif self.steps == 2:
            text = record["target"]
        else:
            text = self.templates.prompt.format(target=record["target"], attributes=record["attributes"])
        return " ".join(text.split()).strip(" .") or record["target"] or record["reason"]

    @torch.no_grad()
    def prompt_embeddings(self, texts: list) -> tuple:
        """((B, L, d) float embeddings of each text's tokens from the MLLM, right-padded, (B, L)
        bool mask of real tokens). The BOS token is read but not returned."""
        rows = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        if any(not r for r in rows):
            raise ValueError(f"prompt text: an empty prompt cannot prompt the segmenter: {texts}")
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        longest = max(len(r) for r in rows) + len(bos)
        device = self.lm.get_input_embeddings().weight.device
        ids = torch.full((len(rows), longest), self.tokenizer.pad_token_id, device=device)
        mask = torch.zeros(len(rows), longest, dtype=torch.bool, device=device)
        for b, r in enumerate(rows):
            ids[b, : len(bos) + len(r)] = torch.tensor(bos + r)
            mask[b, len(bos) : len(bos) + len(r)] = True
        if self.features == "input":
            states = self.lm.get_input_embeddings()(ids)
        else:
            language = base_model(self.lm).model.language_model
            states = language(input_ids=ids, attention_mask=mask | (torch.arange(longest, device=device) < len(bos)))
            states = states.last_hidden_state
        return states[:, len(bos) :].float(), mask[:, len(bos) :]
