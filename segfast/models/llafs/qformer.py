"""LLaFS's visual tokens: BLIP-2's Q-Former over the encoder's features, with its text input, and
the fully-connected layer into the LLM (§3.1, Supp B).

The Q-Former (transformers' Blip2QFormerModel; 8 layers of width 384 and 100 queries in the
paper) reads the text "a photo of [class]." beside its queries (Supp B) through BERT-style word
and position embeddings (BLIP-2's Blip2TextEmbeddings); queries and text attend to each other,
only the queries cross-attend to the image and become the visual tokens. Without a class (pseudo
pairs) the queries run alone.

Loading (`path`):
  * a stage-1 checkpoint of segfast (checkpoints/step-N, trained with model.options.stage=qformer):
    the Q-Former, its queries, text embeddings, memory projection and the fully-connected layer;
  * a BLIP-2 checkpoint directory in transformers' format (Blip2Model / ...ForConditionalGeneration
    / ...ForImageTextRetrieval, or a lone Blip2QFormerModel): the Q-Former's layers and, where the
    checkpoint has them (the retrieval ones), the text embeddings. BLIP-2's Q-Former reads a
    1408-wide EVA ViT-g; a linear layer projects the encoder's 3584 ResNet channels to that width
    (trained with the Q-Former in stage 1). BLIP-2's 32 query tokens do not fill LLaFS's 100: they
    are copied into the first 32 and the rest stay random (a warning says so).
"""

import json
import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("segfast")
QFORMER_TEXT = "a photo of {name}."  # LLaFS Supp B


def _state(directory: Path) -> dict:
    """Every tensor of a transformers checkpoint directory (safetensors, sharded or not)."""
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no *.safetensors weights")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


class VisualTokens(nn.Module):
    """Features (N, C, h, w) [+ class names] -> (N, Q, llm_dim) tokens."""

    def __init__(
        self, channels: int, llm_dim: int, qformer: dict, queries: int, text: bool, tokenizer_path: str, words
    ):
        super().__init__()
        from transformers import Blip2QFormerConfig, Blip2QFormerModel
        from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

        self.tokenizer = self._tokenizer(tokenizer_path, words) if text else None
        extra = (
            {
                "vocab_size": len(self.tokenizer),
                "pad_token_id": self.tokenizer.pad_token_id,
                "use_qformer_text_input": True,
            }
            if text
            else {}
        )
        config = Blip2QFormerConfig(**{"encoder_hidden_size": channels, **qformer, **extra})
        self.memory_proj = (
            nn.Identity() if config.encoder_hidden_size == channels else nn.Linear(channels, config.encoder_hidden_size)
        )
        self.qformer = Blip2QFormerModel(config)
        self.text = Blip2TextEmbeddings(config) if text else None
        self.query_tokens = nn.Parameter(torch.randn(1, queries, config.hidden_size) * 0.02)
        self.project = nn.Linear(config.hidden_size, llm_dim)

    @staticmethod
    def _tokenizer(path, words):
        if path:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(path)
        from segfast.models.tiny import word_tokenizer

        return word_tokenizer(sorted(set(words) | {"a", "photo", "of", "."}))

    @classmethod
    def blip2_config(cls, path: str) -> dict:
        """The Q-Former fields of a BLIP-2 directory's config.json (for building the module to load it)."""
        cfg = json.loads((Path(path) / "config.json").read_text())
        cfg = cfg.get("qformer_config", cfg)
        keys = (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "encoder_hidden_size",
            "cross_attention_frequency",
            "vocab_size",
            "max_position_embeddings",
            "pad_token_id",
        )
        return {k: cfg[k] for k in keys if k in cfg}

    def load(self, path: str) -> None:
        """Loads a stage-1 checkpoint or a BLIP-2 checkpoint (see the module doc)."""
        directory = Path(path)
        if (directory / "trainable.safetensors").exists():
            from safetensors.torch import load_file

            saved = load_file(str(directory / "trainable.safetensors"))
            mine = {k.removeprefix("visual."): v for k, v in saved.items() if k.startswith("visual.")}
            if not mine:
                raise ValueError(
                    f"model.options.qformer_path={path}: the checkpoint has no visual.* (Q-Former) weights"
                )
            missing = set(self.state_dict()) - set(mine)
            if missing:
                raise ValueError(f"model.options.qformer_path={path}: the checkpoint lacks {sorted(missing)[:6]}")
            self.load_state_dict(mine)
            return
        state = _state(directory)
        prefix = "qformer." if any(k.startswith("qformer.") for k in state) else ""
        layers = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix) and "layer" in k}
        result = self.qformer.load_state_dict(layers, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("layernorm")] + result.unexpected_keys
        if missing:
            raise ValueError(f"model.options.qformer_path={path} does not fit the Q-Former: {missing[:6]}")
        if f"{prefix}layernorm.weight" in state:
            self.qformer.layernorm.load_state_dict(
                {"weight": state[f"{prefix}layernorm.weight"], "bias": state[f"{prefix}layernorm.bias"]}
            )
        text = {k.removeprefix("embeddings."): v for k, v in state.items() if k.startswith("embeddings.")}
        if self.text is not None and text:
            have, want = self.text.word_embeddings.weight.shape, text["word_embeddings.weight"].shape
            if have != want:
                raise ValueError(
                    f"model.options.qformer_path={path}: its text embeddings are {tuple(want)}, the Q-Former "
                    f"tokenizer gives {tuple(have)}; set model.options.qformer_tokenizer to BLIP-2's (BERT) tokenizer"
                )
            self.text.load_state_dict(text, strict=False)
        queries = state.get("query_tokens")
        if queries is not None:
            n = min(queries.shape[1], self.query_tokens.shape[1])
            with torch.no_grad():
                self.query_tokens[:, :n] = queries[:, :n]
            if n < self.query_tokens.shape[1]:
                log.warning(
                    "segfast: %s has %d query tokens; the other %d start random",
                    path,
                    n,
                    self.query_tokens.shape[1] - n,
                )

    def forward(self, feats: torch.Tensor, names=None, position: torch.Tensor | None = None) -> torch.Tensor:
        """feats (N, C, h, w); names: N class names or None (no text); position: (h*w, C) added
        to the memory or None."""
        memory = feats.flatten(2).transpose(1, 2)
        if position is not None:
            memory = memory + position.to(memory.dtype)
        memory = self.memory_proj(memory)
        queries = self.query_tokens.expand(len(feats), -1, -1)
        q = queries.shape[1]
        if self.text is None or names is None:
            out = self.qformer(query_embeds=queries, encoder_hidden_states=memory)
        else:
            enc = self.tokenizer([QFORMER_TEXT.format(name=n) for n in names], padding=True, return_tensors="pt")
            ids, attention = enc["input_ids"].to(feats.device), enc["attention_mask"].to(feats.device)
            embeds = self.text(input_ids=ids, query_embeds=queries)
            mask = torch.cat([torch.ones(len(feats), q, dtype=attention.dtype, device=feats.device), attention], 1)
            out = self.qformer(query_embeds=embeds, query_length=q, attention_mask=mask, encoder_hidden_states=memory)
        return self.project(out.last_hidden_state[:, :q])
