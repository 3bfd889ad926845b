import pytest

from tests.inference.tiny import tiny_checkpoint


@pytest.fixture(scope="session")
def segllm_checkpoint(tmp_path_factory):
    """(checkpoint directory, settings that make its random model answer two [SEG])."""
    checkpoint, model = tiny_checkpoint(tmp_path_factory.mktemp("segllm") / "ckpt", "segllm")
    seg = model.tokenizer.convert_tokens_to_ids("[SEG]")
    return checkpoint, {"generate": {"sequence_bias": {(seg,): 1e4}, "max_new_tokens": 2}}
