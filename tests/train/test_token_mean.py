"""Every model with a token-mean text loss counts its target tokens for the engine
(count_targets) and divides its token sum by the engine's global count (num_items_in_batch), so
the loss over a global batch does not depend on how it is split into micro-batches."""

import pytest
import torch

from segfast.data import collate

pytest.importorskip("segment_anything")
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # SDPA fallback of masked attention on CPU


def _toy():
    from segfast.config import ModelConfig
    from segfast.data.toy import ToyTokens
    from segfast.models.toy.model import ToyLLM

    torch.manual_seed(0)
    return ToyLLM(ModelConfig()), collate([ToyTokens(size=4, seq_len=12, min_len=3)[i] for i in range(4)]), "loss_text"


def _lisa():
    from segfast.data.conversations import SegConversations
    from tests.models.seg_family import batch_of, build

    return build("lisa"), batch_of(SegConversations(length=4), 3), "text"


def _llmseg():
    from segfast.data.referring import ReferringSegmentation
    from tests.models.seg_family import build

    return build("llm-seg"), collate([ReferringSegmentation(length=3)[i] for i in range(3)]), "text"


def _llafs():
    from tests.models.test_llafs_model import pseudo_batch, tiny

    batch = pseudo_batch(2)
    polygons = list(batch["query_polygons"])
    batch["query_polygons"] = [polygons[0], torch.cat([polygons[1]] * 2)]  # two objects: a longer answer
    return tiny(max_objects=2), batch, "loss_llm"


@pytest.mark.parametrize("make", [_toy, _lisa, _llmseg, _llafs], ids=["toy-llm", "lisa", "llm-seg", "llafs"])
def test_the_text_loss_is_the_token_sum_over_the_engines_count(make):
    model, batch, key = make()
    model.eval()  # dropout off: equal passes
    with torch.no_grad():
        mean = model(batch)[key]
        count = model.count_targets(batch)
        assert count > len(batch[next(iter(batch))])  # several target tokens per sample
        torch.testing.assert_close(model({**batch, "num_items_in_batch": count})[key], mean)  # the right count
        torch.testing.assert_close(model({**batch, "num_items_in_batch": 4 * count})[key], mean / 4)
