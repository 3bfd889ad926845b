"""A config is checked before anything runs: every bad value is a ConfigError naming its key."""

import pytest

import segfast
from segfast.train import ConfigError, load_config


@pytest.mark.parametrize(
    "override, key",
    [
        ("run.save_every=0", "run.save_every"),  # was a ZeroDivisionError after the first step
        ("run.log_every=0", "run.log_every"),
        ("run.eval_every=-1", "run.eval_every"),  # was accepted
        ("run.eval_batches=-2", "run.eval_batches"),
        ("data.num_workers=-1", "data.num_workers"),
        ("optim.lr=0", "optim.lr"),
        ("optim.warmup_steps=-5", "optim.warmup_steps"),
        ("optim.min_lr_ratio=2", "optim.min_lr_ratio"),
        ("optim.betas=[0.9", "optim.betas"),  # was a raw YAML traceback
        ("optim.betas=abc", "optim.betas"),
        ("optim.betas=[0.9, 1.5]", "optim.betas"),
        ("optim.betas=[0.9]", "optim.betas"),
    ],
)
def test_bad_values_are_refused_up_front_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=[override])


def test_good_betas_and_zero_eval_every_still_load():
    cfg = load_config(overrides=["optim.betas=[0.9, 0.999]", "run.eval_every=0"])
    assert cfg.optim.betas == (0.9, 0.999) and cfg.run.eval_every == 0


def test_a_typo_in_model_options_is_an_error_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"model\.options\.hiden_size.*did you mean model\.options\.hidden_size"):
        load_config(overrides=["model.options.hiden_size=32"])  # toy-llm: silently ignored before
    with pytest.raises(ConfigError, match=r"model\.options\.lamda_bce.*did you mean model\.options\.lambda_bce"):
        load_config(base={"model": {"name": "lisa", "options": {"lamda_bce": 1.0}}})
    assert load_config(overrides=["model.options.hidden_size=32"]).model.options == {"hidden_size": 32}


def test_unknown_model_and_dataset_names_suggest_the_closest():
    with pytest.raises(ConfigError, match=r"model\.name 'lisaa'.*did you mean lisa"):
        load_config(overrides=["model.name=lisaa"])
    with pytest.raises(ConfigError, match=r"data\.name 'referrin'.*did you mean referring"):
        load_config(overrides=["data.name=referrin"])


def test_a_config_built_in_code_is_validated_too(tmp_path):
    from segfast.config import TrainConfig

    cfg = TrainConfig()
    cfg.run.output_dir, cfg.run.save_every = str(tmp_path), 0
    with pytest.raises(ConfigError, match=r"run\.save_every"):
        segfast.train(cfg)
