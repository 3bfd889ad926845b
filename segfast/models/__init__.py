"""The trainable systems and their shared parts. MODELS maps config names to constructors
(cfg: ModelConfig, device) -> nn.Module implementing segfast.models.protocol.SegModel;
OPTIONS names where each model declares its model.options (a dict of names and defaults), so a
config is checked before anything is built; CONFIG_DEFAULTS holds a model's own defaults for the
other config sections (a config's values still win)."""

import importlib


def _toy(cfg, device=None):
    from segfast.models.toy import ToyLLM

    return ToyLLM(cfg, device)


def _llafs(cfg, device=None):
    from segfast.models.llafs.model import LLaFS

    return LLaFS(cfg, device)


def _llmseg(cfg, device=None):
    from segfast.models.llmseg.model import LLMSeg

    return LLMSeg(cfg, device)


def _lisa(cfg, device=None):
    from segfast.models.lisa.model import LISA

    return LISA(cfg, device)


def _lasagna(cfg, device=None):
    from segfast.models.lasagna.model import LaSagnA

    return LaSagnA(cfg, device)


def _segllm(cfg, device=None):
    from segfast.models.segllm.model import SegLLM

    return SegLLM(cfg, device)


def _llavaseg(cfg, device=None):
    from segfast.models.llavaseg.model import LLaVASeg

    return LLaVASeg(cfg, device)


MODELS = {"toy-llm": _toy, "llafs": _llafs, "llm-seg": _llmseg, "lisa": _lisa, "lasagna": _lasagna, "segllm": _segllm,
          "llavaseg": _llavaseg}

OPTIONS = {"toy-llm": "segfast.models.tiny:TINY_LLAMA", "llafs": "segfast.models.llafs.model:DEFAULTS",
           "llm-seg": "segfast.models.llmseg.model:DEFAULTS", "lisa": "segfast.models.lisa.model:DEFAULTS",
           "lasagna": "segfast.models.lasagna.model:DEFAULTS", "segllm": "segfast.models.segllm.model:DEFAULTS",
           "llavaseg": "segfast.models.llavaseg.model:DEFAULTS"}


def declared_options(name: str) -> dict | None:
    """The model.options (names and defaults) model `name` declares; None for a model registered
    without a declaration (nothing to check)."""
    if name not in OPTIONS:
        return None
    module, attribute = OPTIONS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


# LLaVASeg: the MLLM stays frozen (no LoRA); AdamW at 1e-4 with weight decay 1e-4 as the paper trains
CONFIG_DEFAULTS = {"llavaseg": {"model": {"lora": {"enabled": False}},
                                "optim": {"lr": 1e-4, "weight_decay": 1e-4}}}
