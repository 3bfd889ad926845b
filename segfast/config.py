"""Run configuration: typed dataclasses, loaded from YAML with dotted overrides.

    cfg = load_config("run.yaml", ["optim.lr=1e-4", "run.total_steps=200"])

Unknown keys are errors that name the key (and suggest the closest known one); values are
converted to the field's type, so "run.total_steps=200" is an int. model.options are checked
against the typed options dataclass of the system named by model.name (segfast.registry), whose
fields carry their default and its source (`option`).

A leaf module: it imports nothing of segfast but the registry, so every layer may use it.
"""

import copy
import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from segfast import registry


class ConfigError(ValueError):
    """A configuration problem, with the dotted key it concerns."""


def option(default, source: str):
    """A field of a system's options dataclass: its default and, in one line, where that default
    comes from ("Supp B", "authors' code", "ours: because ..."); `segfast options NAME` prints it."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"source": source})
    return field(default=default, metadata={"source": source})


def build_options(cls, given: dict | None, prefix: str = "model.options."):
    """An instance of the options dataclass `cls` from a mapping: unknown keys are ConfigErrors
    naming the key with the closest known one, values converted to the fields' types."""
    return given if isinstance(given, cls) else _build(cls, dict(given or {}), prefix)


@dataclass
class LoraConfig:
    enabled: bool = True
    r: int = 8  # LISA's defaults
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class ModelConfig:
    name: str = "toy-llm"  # a registered system (segfast.registry)
    path: str = ""  # local model directory ("" = random init from `options`)
    special_tokens: list = field(default_factory=list)
    attention: str = "auto"  # auto | flash_attention_2 | sdpa | eager
    lora: LoraConfig = field(default_factory=LoraConfig)
    options: dict = field(default_factory=dict)  # the system's options (its options dataclass)


@dataclass
class DataConfig:
    name: str = "toy-tokens"  # a registered dataset (segfast.registry)
    num_workers: int = 0
    options: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.95)
    warmup_steps: int = 10
    schedule: str = "cosine"  # cosine | linear | constant
    min_lr_ratio: float = 0.0
    clip_grad: float = 1.0  # 0 disables


@dataclass
class RunConfig:
    output_dir: str = "runs/toy"
    total_steps: int = 100
    global_batch_size: int = 8  # samples per optimizer step, over all processes
    micro_batch_size: int = 4  # samples per forward pass on one device
    device: str = "auto"  # auto (a GPU when there is one) | cpu
    strategy: str = "auto"  # auto | none | ddp | fsdp
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    gradient_checkpointing: bool = False
    seed: int = 0
    log_every: int = 1
    save_every: int = 50
    keep_last: int = 2
    eval_every: int = 0  # 0 disables
    eval_batches: int = 4  # ours: micro-batches per process of a periodic evaluation; 0 = the whole split
    tensorboard: bool = False
    resume: bool = False  # continue from the newest checkpoint in output_dir
    # ours, because a later stage (LLaFS pretraining -> few-shot training, fine-tuning) must never start
    # from scratch by accident: a checkpoint (or a run directory: its newest valid one) whose trainable
    # weights, LoRA adapter included, start this run; ignored when the run resumes its own checkpoint
    init_from: str = ""
    init_strict: bool = True  # ours: a stage never silently loads half its weights (missing/unexpected listed)
    stop_after: int = 0  # stop (as if killed) after this many steps of this process; 0 = never


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _did_you_mean(word, known, prefix: str = "") -> str:
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def check_keys(prefix: str, given, known) -> None:
    """ConfigError for the first key of `given` that is not in `known`, with the closest known
    key as a suggestion (prefix: the dotted section, e.g. "model.options.")."""
    for key in given:
        if key not in known:
            raise ConfigError(
                f"unknown config key {prefix + str(key)!r}{_did_you_mean(key, known, prefix)}; known: "
                f"{', '.join(prefix + str(k) for k in known)}"
            )


def check_name(key: str, name: str, known) -> None:
    """ConfigError when `name` (the value of `key`, e.g. model.name) is not registered."""
    if name not in known:
        raise ConfigError(f"{key} {name!r} is not one of {', '.join(known)}{_did_you_mean(name, known)}")


def _convert(value, kind, key):
    origin = typing.get_origin(kind) or kind
    try:
        if kind is bool or origin is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if origin in (int, float, str):
            if origin is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return origin(value)
        if origin in (list, tuple):
            if isinstance(value, str):
                value = yaml.safe_load(value)
            return origin(value)
        if origin is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
    except (TypeError, ValueError, yaml.YAMLError):
        raise ConfigError(f"{key}: expected {getattr(origin, '__name__', origin)}, got {value!r}") from None
    return value


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    check_keys(prefix, data, fields)
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value or {}, dotted + ".")
        else:
            kwargs[key] = _convert(value, kind, dotted)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value):
    """Sets a.b.c in nested mappings; an integer part indexes a list (data.options.datasets.0...)."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{dotted}: {part} is not an index of a list of {len(node)}")
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"{dotted}: {part} is not a section")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"{dotted}: {last} is not an index of a list of {len(node)}")
        node[int(last)] = value
    else:
        node[last] = value


def load_config(path: str | Path | None = None, overrides: list | tuple = (), base: dict | None = None) -> TrainConfig:
    """TrainConfig from a YAML file (or `base` dict) plus "a.b.c=value" overrides."""
    tree = dict(base or {})
    if path is not None:
        text = Path(path).read_text()
        try:
            tree = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        try:
            value = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key.strip()}: {value!r} is not a valid value ({exc.problem})") from None
        _set_dotted(tree, key.strip(), value)
    name = (tree.get("model") or {}).get("name")
    if name in registry.systems():
        tree = _merged(registry.system(name).config_defaults, tree)
    cfg = _build(TrainConfig, tree, "")
    validate(cfg)
    return cfg


def _merged(defaults: dict, tree: dict) -> dict:
    """tree over defaults, nested dicts merged key by key."""
    out = dict(defaults)
    for key, value in tree.items():
        out[key] = _merged(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


def _at_least(key: str, value, low) -> None:
    if value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")


def validate(cfg: TrainConfig) -> None:
    """Every value checked before anything runs: a ConfigError names the key."""
    run, optim = cfg.run, cfg.optim
    for key in ("total_steps", "global_batch_size", "micro_batch_size", "save_every", "log_every", "keep_last"):
        _at_least(f"run.{key}", getattr(run, key), 1)
    for key in ("eval_every", "eval_batches", "stop_after"):
        _at_least(f"run.{key}", getattr(run, key), 0)
    _at_least("data.num_workers", cfg.data.num_workers, 0)
    for key in ("weight_decay", "warmup_steps", "clip_grad"):
        _at_least(f"optim.{key}", getattr(optim, key), 0)
    if not optim.lr > 0:
        raise ConfigError(f"optim.lr must be > 0, got {optim.lr}")
    if not 0 <= optim.min_lr_ratio <= 1:
        raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {optim.min_lr_ratio}")
    betas = optim.betas
    if len(betas) != 2 or not all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas
    ):
        raise ConfigError(f"optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.95], got {list(betas)}")
    if run.device not in ("auto", "cpu"):
        raise ConfigError(f"run.device must be auto or cpu, got {run.device!r}")
    if run.strategy not in ("auto", "none", "ddp", "fsdp"):
        raise ConfigError(f"run.strategy must be auto, none, ddp or fsdp, got {run.strategy!r}")
    if run.precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ConfigError(f"run.precision must be auto, bf16, fp16 or fp32, got {run.precision!r}")
    if optim.schedule not in ("cosine", "linear", "constant"):
        raise ConfigError(f"optim.schedule must be cosine, linear or constant, got {optim.schedule!r}")
    if cfg.model.attention not in ("auto", "flash_attention_2", "sdpa", "eager"):
        raise ConfigError(
            f"model.attention must be auto, flash_attention_2, sdpa or eager, got {cfg.model.attention!r}"
        )
    check_name("model.name", cfg.model.name, registry.systems())
    check_name("data.name", cfg.data.name, registry.datasets())
    options = registry.system(cfg.model.name).options
    if options is not None:
        build_options(options, cfg.model.options)
