"""Runs every GPU kernel of segfast once on small, odd-sized inputs and compares each result with
the CPU path: the program scripts/gpu_check.sh runs under compute-sanitizer (memcheck, racecheck),
where a stray access or a race is reported by the sanitizer and a wrong value by this script.

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python scripts/cuda_kernels_once.py

Without a GPU it says so and exits 0 (nothing to check). Exit status 1 lists the kernels whose
results differ from the CPU's.
"""

import sys

import torch


def cases():
    """(name, function of device returning a tensor or tuple of tensors), CPU result = reference."""
    from segfast import ops

    g = torch.Generator().manual_seed(0)
    rand_masks = lambda n, h, w: torch.rand(n, h, w, generator=g) < torch.rand(n, 1, 1, generator=g)  # noqa: E731
    polys = torch.rand(7, 9, 2, generator=g, dtype=torch.float64) * torch.tensor([45.0, 37.0]) - 3
    lengths = torch.randint(3, 10, (7,), generator=g)
    groups = torch.randint(0, 4, (7,), generator=g)
    a, b = rand_masks(21, 13, 77), rand_masks(18, 13, 77)
    dense16 = rand_masks(5, 11, 48)
    logits = torch.randn(6, 19, 45, generator=g) * 3
    feats = torch.randn(2, 5, 6, 7, generator=g)
    pool_masks = torch.rand(2, 3, 29, 61, generator=g) < 0.4
    buf = torch.zeros(ops.pack_masks(a).numel() + 3, dtype=torch.uint8)

    def misaligned(t):
        view = buf.to(t.device)[3:].view(t.shape)
        view.copy_(t)
        return view

    def raster(dev, rule, packed):
        return ops.rasterize_polygons(
            polys.to(dev), 37, 45, lengths=lengths.to(dev), groups=groups.to(dev), num_masks=4, rule=rule, packed=packed
        )

    yield from [
        (f"rasterize {rule} {'packed' if packed else 'dense'}", lambda d, r=rule, p=packed: raster(d, r, p))
        for rule in ("center", "coco")
        for packed in (False, True)
    ]
    yield "rasterize dense width 64", lambda d: ops.rasterize_polygons(polys.to(d) * 2, 40, 64)
    yield "pack (16-byte rows)", lambda d: ops.pack_masks(dense16.to(d))
    yield "pack (odd width)", lambda d: ops.pack_masks(a.to(d))
    yield "unpack (16-byte rows)", lambda d: ops.unpack_masks(ops.pack_masks(dense16).to(d), 48)
    yield "unpack (misaligned view)", lambda d: ops.unpack_masks(misaligned(ops.pack_masks(a).to(d)), 77)
    yield "intersections pairwise", lambda d: ops.mask_intersection(a.to(d), b.to(d))
    yield "intersections matched", lambda d: ops.mask_intersection(a[:18].to(d), b.to(d), matched=True)
    yield (
        "intersections int8 product",
        lambda d: ops.overlap.int_mm_intersections(ops.pack_masks(a.to(d)), ops.pack_masks(b.to(d))),
    )
    yield "grid weights area", lambda d: ops.mask_grid_weights(pool_masks.to(d), (6, 7))
    yield (
        "grid weights bilinear grid",
        lambda d: ops.mask_grid_weights(pool_masks.to(d), (6, 7), weights="bilinear", grid=(15, 17)),
    )
    yield "mask_pool", lambda d: ops.mask_pool(feats.to(d), pool_masks.to(d), weights="bilinear")
    for offset in (1.0, -0.5):
        yield (
            f"binarize offset {offset}",
            lambda d, o=offset: torch.ops.segfast.binarize_logits(logits.to(d), 0.2 + o, 0.2 - o, 0.2, 30, 70, 5, 9),
        )
    yield "polar polygons", lambda d: ops.mask_to_polar_polygons(a.to(d))
    ohem_logits = torch.randn(2, 5, 9, 11, generator=g)
    ohem_target = torch.randint(0, 5, (2, 9, 11), generator=g)
    ohem_target[0, :2] = 255

    def ohem(dev):
        x = ohem_logits.to(dev).requires_grad_()
        loss = ops.ohem_cross_entropy(x, ohem_target.to(dev), thresh=0.7, min_kept=20)
        loss.backward()
        return loss.detach(), x.grad

    yield "ohem forward+backward", ohem
    q, k, v = (torch.randn(2, 3, 17, 32, generator=g) for _ in range(3))
    attend = torch.rand(2, 17, 17, generator=g) < 0.5

    def attention(dev):
        qs = [t.to(dev).requires_grad_() for t in (q, k, v)]
        out = ops.masked_attention(*qs, attend.to(dev))
        out.square().sum().backward()
        return (out.detach(), *(t.grad for t in qs))

    yield "masked attention forward+backward", attention


def same(x, y) -> bool:
    if isinstance(x, (tuple, list)):
        return all(same(a, b) for a, b in zip(x, y))
    x = x.cpu()
    if x.is_floating_point():
        return bool(torch.allclose(x, y, rtol=1e-4, atol=1e-4, equal_nan=True))
    return torch.equal(x, y)


def main() -> int:
    if not torch.cuda.is_available():
        print("no GPU: nothing to check")
        return 0
    failed = []
    for name, fn in cases():
        try:
            ok = same(fn("cuda"), fn("cpu"))
            torch.cuda.synchronize()
        except Exception as exc:  # report every kernel, not only the first failure
            ok = False
            print(f"  {name}: {type(exc).__name__}: {exc}")
        print(f"{'ok  ' if ok else 'FAIL'} {name}", flush=True)
        if not ok:
            failed.append(name)
    print(f"{len(failed)} of the kernels differ from the CPU: {', '.join(failed)}" if failed else "all kernels agree")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
