"""Data specs, image sets and the numpy + Pillow preprocessing spec (no torch here)."""

from .preprocess import Preprocess
from .sources import FASHION_MNIST_CLASSES, ImageSet, default_preprocess, load_split

__all__ = ["FASHION_MNIST_CLASSES", "ImageSet", "Preprocess", "default_preprocess", "load_split"]
