import os

import pytest

import segfast


def test_build_info_reports_the_build():
    info = segfast.build_info()
    assert set(info) >= {"extension", "cuda"}
    if os.environ.get("SEGFAST_REQUIRE_EXTENSION") == "1":
        assert info["extension"], info.get("error")
    if os.environ.get("SEGFAST_REQUIRE_CUDA_BUILD") == "1":
        # CI compiles and links the CUDA kernels even though it cannot run them
        assert info["cuda"], "segfast._C was built without its CUDA kernels"


def test_kernels_package_is_installed_as_segfast_kernels():
    import segfast.kernels

    assert callable(segfast.kernels.available)


@pytest.mark.skipif(not segfast.build_info()["extension"], reason="segfast._C not built")
def test_ops_are_registered_with_the_dispatcher():
    import torch

    assert hasattr(torch.ops.segfast, "rasterize_polygons")
