"""`segfast serve`: the checkpoint loaded by segfast.load and served on the host and port asked
for; a bad checkpoint or settings are refused before any page starts."""

import pytest

import segfast.serve
from segfast.cli import main


def test_serve_loads_the_checkpoint_and_launches_the_page(segllm_checkpoint, monkeypatch):
    checkpoint, _ = segllm_checkpoint
    launched = {}
    monkeypatch.setattr(segfast.serve, "launch", lambda predictor, **kw: launched.update(kw, predictor=predictor))
    settings = ["--settings", '{"generate": {"max_new_tokens": 3}}']
    assert main(["serve", "--checkpoint", str(checkpoint), "--port", "7999", "--device", "cpu", *settings]) == 0
    predictor = launched.pop("predictor")
    assert predictor.system == "segllm" and predictor.device.type == "cpu"
    assert predictor.runner.settings["generate"] == {"max_new_tokens": 3}
    assert launched == {"host": "127.0.0.1", "port": 7999, "title": f"segfast segllm: {checkpoint}"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpoint", "no/such/dir"], "segfast serve: checkpoint: no/such/dir is not a directory"),
        (["--checkpoint", ".", "--settings", "{oops"], "segfast serve: --settings is not JSON (Expecting"),
    ],
)
def test_a_bad_checkpoint_or_settings_is_refused_clearly(argv, message, monkeypatch):
    monkeypatch.setattr(segfast.serve, "launch", lambda *a, **kw: pytest.fail("launched"))
    with pytest.raises(SystemExit) as exit_:
        main(["serve", *argv])
    assert str(exit_.value).startswith(message)
