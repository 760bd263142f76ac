"""ONNX files users hand us (an export source, a file to bench, a bundle's artifacts): checked
before any runtime opens them (``check``), and edgeresnet's metadata in them read through one
bounded, typed reader (``metadata``). ``onnxrun.user_session`` opens a checked file."""

from .check import OURS, STANDARD, check_onnx_file
from .metadata import OnnxMeta, read_metadata

__all__ = ["OURS", "STANDARD", "OnnxMeta", "check_onnx_file", "read_metadata"]
