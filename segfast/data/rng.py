"""Per-sample random streams that are the same in every process."""

import random


def sample_rng(seed: int, split: str, index: int) -> random.Random:
    """The random stream of sample `index`. Not hash((seed, split, index)): Python salts str hashes
    per process (PYTHONHASHSEED), so ranks, loader workers and reruns drew different samples for
    one index; random.seed hashes a str seed with SHA-512, the same everywhere."""
    return random.Random(f"{seed}/{split}/{index}")
