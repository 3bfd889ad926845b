"""Bipartite matching for LLaFS's L_llm: the LLM's polygons are a set, so the ground-truth objects
are put in the order that best matches what the model predicts before the cross-entropy over
coordinate tokens is taken."""

import torch


def linear_assignment(cost: torch.Tensor) -> list[tuple[int, int]]:
    """Minimum-cost matching of a (rows, cols) cost matrix (Hungarian algorithm with potentials,
    O(n^3)): a list of (row, col) pairs, one per row when rows <= cols, else one per column."""
    cost = torch.as_tensor(cost, dtype=torch.float64)
    transposed = cost.shape[0] > cost.shape[1]
    c = (cost.T if transposed else cost).tolist()
    n, m = len(c), len(c[0]) if c else 0
    inf = float("inf")
    u, v = [0.0] * (n + 1), [0.0] * (m + 1)
    owner, way = [0] * (m + 1), [0] * (m + 1)  # owner[j]: row matched to column j (1-based, 0 = none)
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        minv, used = [inf] * (m + 1), [False] * (m + 1)
        while owner[j0]:
            used[j0] = True
            i0, delta, j1 = owner[j0], inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = c[i0 - 1][j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    pairs = [(owner[j] - 1, j - 1) for j in range(1, m + 1) if owner[j]]
    pairs = [(b, a) for a, b in pairs] if transposed else pairs
    return sorted(pairs)


def match_polygons(pred: torch.Tensor, gt: torch.Tensor) -> list[tuple[int, int]]:
    """(P, V, 2) predicted and (G, V, 2) ground-truth polygons -> (pred, gt) pairs minimising the
    summed L1 distance between corresponding vertices."""
    if len(pred) == 0 or len(gt) == 0:
        return []
    cost = (pred[:, None].double() - gt[None].double()).abs().sum((-1, -2))
    return linear_assignment(cost)


def reorder_ground_truth(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """The ground-truth polygons reordered so that slot k holds the object matched to the model's
    k-th predicted polygon; unmatched objects follow in their original order."""
    pairs = match_polygons(pred, gt)
    first = [g for _, g in sorted(pairs)]
    rest = [g for g in range(len(gt)) if g not in set(first)]
    return gt[first + rest]
