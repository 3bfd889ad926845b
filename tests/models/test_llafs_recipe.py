"""The README's LLaFS recipe end to end on tiny data: stage 1 (Q-Former on captions) -> stage 2
(curriculum pretraining) -> stage 3 (few-shot training from stage 2's weights) -> llafs-eval,
each stage starting from the previous one's weights."""

import argparse
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import segfast
from segfast.train import load_config
from tests.data.layouts import pascal_tree
from tests.models.test_llafs_model import TINY

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::RuntimeWarning")]
CONFIGS = Path(__file__).parents[2] / "configs"


def _tiny_overrides(out, steps=2, lr=None):
    options = [f"model.options.{k}={json.dumps(v)}" for k, v in TINY.items()]
    run = [
        f"run.output_dir={out}",
        f"run.total_steps={steps}",
        "run.global_batch_size=2",
        "run.micro_batch_size=2",
        f"run.save_every={steps}",
        "run.eval_every=0",
        "run.device=cpu",
        "run.gradient_checkpointing=false",
        "data.num_workers=0",
    ]
    return options + run + ([f"optim.lr={lr}", "optim.warmup_steps=0"] if lr else [])


def _weights(ckpt):
    return load_file(str(Path(ckpt) / "trainable.safetensors"))


def test_three_stages_hand_over_their_weights_and_evaluate(tmp_path, gen, capsys):
    (tmp_path / "cap").mkdir()
    for i in range(2):
        Image.fromarray((torch.rand(20, 24, 3, generator=gen) * 255).byte().numpy()).save(tmp_path / "cap" / f"{i}.jpg")
    (tmp_path / "cap" / "annotations.json").write_text(
        json.dumps([{"image": "0.jpg", "caption": "a cat"}, {"image": "1.jpg", "caption": ["a dog", "dog"]}])
    )
    pascal_tree(tmp_path / "voc", gen)

    stage1 = load_config(
        CONFIGS / "llafs_stage1_qformer.yaml",
        _tiny_overrides(tmp_path / "s1") + [f"data.options.root={tmp_path / 'cap'}", "data.options.size=32"],
    )
    assert stage1.model.options["stage"] == "qformer" and not stage1.model.lora.enabled
    segfast.train(stage1)
    s1 = tmp_path / "s1" / "checkpoints" / "step-000002"
    assert {k.split(".")[1] for k in _weights(s1)} == {"qformer", "text", "query_tokens", "project"}

    stage2 = load_config(
        CONFIGS / "llafs_stage2_pretrain.yaml",
        _tiny_overrides(tmp_path / "s2") + [f"model.options.qformer_path={s1}", "data.options.size=32"],
    )
    assert stage2.data.name == "llafs-pseudo" and stage2.data.options["curriculum_samples"] == 60000 * 32
    segfast.train(stage2)
    s2 = tmp_path / "s2" / "checkpoints" / "step-000002"
    assert not any(".qformer." in k for k in _weights(s2))  # frozen in stage 2

    stage3 = load_config(
        CONFIGS / "llafs_pascal_fold0.yaml",
        _tiny_overrides(tmp_path / "s3", steps=1, lr=1e-12)
        + [
            f"model.options.qformer_path={s1}",
            f"run.init_from={tmp_path / 's2'}",
            f"data.options.root={tmp_path / 'voc'}",
            "data.options.size=32",
        ],
    )
    segfast.train(stage3)
    assert f"initialised from {s2}" in capsys.readouterr().out
    s3 = tmp_path / "s3" / "checkpoints" / "step-000001"
    before, after = _weights(s2), _weights(s3)
    assert set(before) == set(after) and any("lora_B" in k for k in before)
    for k in before:  # a step of lr 1e-12 leaves stage 2's weights where they were
        torch.testing.assert_close(after[k], before[k], atol=1e-9, rtol=0)
    from segfast.train.checkpoint import load_trained

    model = load_trained(s3)
    q1 = {k.removeprefix("visual."): v for k, v in _weights(s1).items() if ".qformer." in k or "query_tokens" in k}
    own = model.visual.state_dict()
    assert all(torch.equal(own[k], v) for k, v in q1.items())  # the stage-1 Q-Former, frozen since

    from segfast.jobs.fewshot_eval import run

    args = argparse.Namespace(
        checkpoint=str(s3),
        root=str(tmp_path / "voc"),
        dataset="pascal",
        fold=0,
        shots=1,
        episodes=3,
        seeds=2,
        min_class_pixels=0,
        batch_size=2,
        attributes=None,
        tables=None,
    )
    model.options.max_objects = 1
    assert run(args) == 0
    printed = capsys.readouterr().out
    assert "3 episodes x 2 seed(s)" in printed and "pascal5i-fold0-1shot" in printed and "original size" in printed
