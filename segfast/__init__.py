"""segfast: fast, tested kernels and training for LLM-based image segmentation."""

from segfast import metrics, nn, ops
from segfast._extension import build_info
from segfast.train import train

__version__ = "0.1.0"
__all__ = ["ops", "nn", "metrics", "train", "build_info", "__version__"]
