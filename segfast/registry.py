"""What is registered: systems, datasets and jobs, each declared beside its own code.

    segfast/models/<system>/spec.py   register(System(...)): model class, typed options, datasets,
                                      config defaults, special tokens, jobs
    segfast/data/<module>.py          @dataset("name") on a Dataset class or factory
    segfast/jobs/<module>.py          register_job(Job(...)): an offline job and its CLI subcommand

The engine, `segfast evaluate`, the CLI and the config checks ask this module, which imports the
places above on first use (`discover`), plus any plugin module named by the entry-point group
"segfast.plugins" or by SEGFAST_PLUGINS (comma-separated module names): a new system lives in
its own folder and touches no central list.

A leaf module: nothing of segfast is imported here by name; `discover` imports the registering
modules by the folders they sit in. Only the layers above read this registry.
"""

import dataclasses
import importlib
import importlib.util
import os
import pkgutil
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class System:
    name: str  # model.name in configs
    model: Callable  # model(cfg.model, device) -> nn.Module (segfast.models.protocol)
    options: type | None = None  # the options dataclass (segfast.config.option fields)
    datasets: tuple = ()  # registered datasets it trains and evaluates on
    config_defaults: dict = field(default_factory=dict)  # its own defaults for the other config sections
    special_tokens: tuple = ()  # tokens it adds to the tokenizer
    jobs: tuple = ()  # registered jobs (CLI subcommands) it brings
    summary: str = ""  # one line for `segfast systems`


@dataclass(frozen=True)
class Dataset:
    name: str  # data.name in configs
    factory: Callable  # factory(options: dict, split: str, seed: int) -> Dataset
    summary: str = ""


@dataclass(frozen=True)
class Job:
    name: str  # the CLI subcommand
    arguments: Callable  # arguments(parser): adds its command-line arguments
    run: Callable  # run(args) -> exit status
    summary: str = ""


_SYSTEMS: dict = {}
_DATASETS: dict = {}
_JOBS: dict = {}
_discovered = False


def register(system: System) -> System:
    """Adds (or replaces, by name) a system."""
    _SYSTEMS[system.name] = system
    return system


def unregister(name: str) -> None:
    _SYSTEMS.pop(name, None)


def dataset(name: str, summary: str = ""):
    """Decorator registering a dataset class (built as cls(seed=, split=, **options)) or a factory
    function (options, split, seed) -> Dataset under `name`."""

    def wrap(obj):
        factory = obj
        if isinstance(obj, type):

            def factory(options, split, seed, cls=obj):
                return cls(seed=seed, split=split, **options)

        _DATASETS[name] = Dataset(name, factory, summary or _first_line(obj.__doc__))
        return obj

    return wrap


def register_job(job: Job) -> Job:
    _JOBS[job.name] = job
    return job


def systems() -> dict:
    discover()
    return dict(_SYSTEMS)


def system(name: str) -> System:
    known = systems()
    if name not in known:
        raise KeyError(f"no system named {name!r}; registered: {', '.join(sorted(known))}")
    return known[name]


def datasets() -> dict:
    discover()
    return dict(_DATASETS)


def build_dataset(name: str, options: dict, split: str, seed: int):
    known = datasets()
    if name not in known:
        raise KeyError(f"no dataset named {name!r}; registered: {', '.join(sorted(known))}")
    return known[name].factory(dict(options or {}), split, seed)


def jobs() -> dict:
    discover()
    return dict(_JOBS)


# Where segfast's own registrations live: (package, module name in each subpackage or None for
# every module of the package).
_BUILT_IN = (("segfast.models", "spec"), ("segfast.data", None), ("segfast.jobs", None))


def discover() -> None:
    """Imports every registering module once: segfast's own (_BUILT_IN) and the plugins."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for package, module in _BUILT_IN:
        for name in _modules(package, module):
            importlib.import_module(name)
    for name in _plugins():
        importlib.import_module(name)


def _modules(package: str, module: str | None) -> Iterator[str]:
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if module is None and not info.name.startswith("_"):
            yield f"{package}.{info.name}"
        elif module is not None and info.ispkg:
            spec = importlib.util.find_spec(f"{package}.{info.name}.{module}")
            if spec is not None:
                yield spec.name


def _plugins() -> list:
    from importlib.metadata import entry_points

    named = [m.strip() for m in os.environ.get("SEGFAST_PLUGINS", "").split(",") if m.strip()]
    return named + [ep.value for ep in entry_points(group="segfast.plugins")]


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n")[0]


class Builders(MutableMapping):
    """name -> model builder, for code that registers a model class in one line
    (`MODELS["mine"] = MyModel` registers System("mine", MyModel)); reads see every system."""

    def __getitem__(self, name):
        return system(name).model if name in systems() else _missing(name)

    def __setitem__(self, name, model):
        register(System(name, model))

    def __delitem__(self, name):
        unregister(name)

    def __iter__(self):
        return iter(systems())

    def __len__(self):
        return len(systems())


class DatasetFactories(MutableMapping):
    """name -> dataset factory (options, split, seed), the same view for datasets."""

    def __getitem__(self, name):
        return datasets()[name].factory if name in datasets() else _missing(name)

    def __setitem__(self, name, factory):
        _DATASETS[name] = Dataset(name, factory)

    def __delitem__(self, name):
        _DATASETS.pop(name, None)

    def __iter__(self):
        return iter(datasets())

    def __len__(self):
        return len(datasets())


def _missing(name):
    raise KeyError(name)


def option_sources(cls) -> list:
    """(name, default, source) of each field of an options dataclass."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append((f.name, default, f.metadata.get("source", "")))
    return out
