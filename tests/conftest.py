import os
import random

import pytest
import torch

# Without a GPU, Triton kernels run under the interpreter (set before any kernel is defined).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Fresh random inputs every run; the seed is printed so a failure can be replayed with
# SEGFAST_TEST_SEED=<seed>.
SEED = int(os.environ.get("SEGFAST_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_report_header(config):
    return f"segfast test seed: {SEED} (replay with SEGFAST_TEST_SEED={SEED})"


@pytest.fixture
def gen(request):
    """A torch.Generator seeded from the run seed and the test's name."""
    g = torch.Generator()
    g.manual_seed(SEED ^ (hash(request.node.nodeid) & 0x7FFFFFFF))
    return g


def pytest_collection_modifyitems(config, items):
    # GPU tests run where a GPU is (scripts/gpu_check.sh). CI deselects them (-m "not gpu") so
    # they are never counted; selected on a machine without CUDA they show as skipped.
    if torch.cuda.is_available():
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
