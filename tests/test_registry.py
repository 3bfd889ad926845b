"""A new system lives in its own folder: registered from there (a plugin module), it trains through
segfast.train, its options are typed and checked, and its job is a CLI subcommand, without an
edit anywhere else."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from segfast import registry
from segfast.config import ConfigError, build_options

ROOT = Path(__file__).resolve().parents[1]

TOY_SYSTEM = {
    "__init__.py": "",
    "model.py": '''
        from dataclasses import dataclass

        import torch
        from torch import nn

        from segfast.config import build_options, option


        @dataclass
        class MeanOptions:
            width: int = option(3, "ours: a toy")
            scale: float = option(1.0, "ours: a toy")


        class MeanModel(nn.Module):
            """Learns the mean of its samples."""

            def __init__(self, cfg, device=None):
                super().__init__()
                self.options = build_options(MeanOptions, cfg.options)
                self.mean = nn.Parameter(torch.zeros(self.options.width))

            def forward(self, batch):
                return {"mse": self.options.scale * (batch["x"] - self.mean).square().mean()}
    ''',
    "data.py": """
        import torch

        from segfast.registry import dataset


        @dataset("toy-mean-data")
        class Points(torch.utils.data.Dataset):
            def __init__(self, width=3, seed=0, split="train", length=32):
                self.x = torch.randn(length, width, generator=torch.Generator().manual_seed(seed)) + 2.0

            def __len__(self):
                return len(self.x)

            def __getitem__(self, i):
                return {"x": self.x[i]}
    """,
    "spec.py": """
        from toy_mean import data  # noqa: F401  (registers its dataset)
        from toy_mean.model import MeanModel, MeanOptions
        from segfast.registry import Job, System, register, register_job


        def arguments(parser):
            parser.add_argument("--times", type=int, default=1)


        def run(args):
            print("toy job ran", args.times)
            return 0


        register(System("toy-mean", MeanModel, MeanOptions, datasets=("toy-mean-data",), jobs=("toy-job",),
                        config_defaults={"optim": {"lr": 0.1}}, summary="a toy"))
        register_job(Job("toy-job", arguments, run, "the toy's job"))
    """,
}

SCRIPT = """
import json, sys
import segfast
from segfast import registry
from segfast.cli import main
from segfast.config import ConfigError

cfg = {"model": {"name": "toy-mean", "options": {"width": 3}}, "data": {"name": "toy-mean-data"},
       "optim": {"warmup_steps": 0, "schedule": "constant", "weight_decay": 0.0},
       "run": {"output_dir": sys.argv[1], "total_steps": 60, "global_batch_size": 8, "micro_batch_size": 8,
               "device": "cpu", "save_every": 1000, "log_every": 1000}}
result = segfast.train(cfg)
assert main(["toy-job", "--times", "2"]) == 0
assert main(["options", "toy-mean"]) == 0
try:
    segfast.train({**cfg, "model": {"name": "toy-mean", "options": {"widht": 3}}})
except ConfigError as exc:
    print("error:", exc)
print(json.dumps({"first": result["losses"][0], "last": result["losses"][-1],
                  "systems": sorted(registry.systems())}))
"""


def test_a_system_in_its_own_folder_registers_trains_and_brings_its_job(tmp_path):
    package = tmp_path / "plugins" / "toy_mean"
    package.mkdir(parents=True)
    for name, text in TOY_SYSTEM.items():
        (package / name).write_text(textwrap.dedent(text))
    env = {
        **os.environ,
        "SEGFAST_PLUGINS": "toy_mean.spec",
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), str(ROOT)]),
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "toy job ran 2" in out.stdout
    assert "width = 3\n    ours: a toy" in out.stdout  # segfast options toy-mean
    assert "error: unknown config key 'model.options.widht' (did you mean model.options.width?)" in out.stdout
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert "toy-mean" in report["systems"] and "lisa" in report["systems"]
    # it learned the mean (lr 0.1 from its config_defaults): from E[x^2] = 5 towards the variance, 1
    assert report["first"] > 4 and report["last"] < 1.5


def test_unknown_option_is_an_error_with_a_suggestion():
    options = registry.system("llm-seg").options
    with pytest.raises(ConfigError, match="did you mean model.options.selection"):
        build_options(options, {"selektion": "top1_iou"})
    with pytest.raises(ConfigError, match="model.options.tau: expected float"):
        build_options(options, {"tau": "warm"})
    assert build_options(options, {"tau": "0.1"}).tau == 0.1


def test_every_system_option_names_its_source():
    for system in registry.systems().values():
        if system.options is None:
            continue
        for name, _default, source in registry.option_sources(system.options):
            assert source.strip(), f"{system.name}: model.options.{name} does not say where its default comes from"
