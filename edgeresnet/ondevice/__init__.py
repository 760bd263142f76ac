"""What runs on the device without this package: the bundle's device file (``device.py``:
check, info, verify, eval, bench) and TensorRT's (``trt_device.py``: build, eval, bench).
Each is one standalone file, copied into every bundle: Python >= 3.8, the standard library,
numpy and the device's own runtime. The bottom layer: it imports nothing of edgeresnet."""
