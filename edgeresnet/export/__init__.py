"""The export: its stages (pipeline), torch -> FP32 ONNX, an ONNX source, and the engine stage."""
