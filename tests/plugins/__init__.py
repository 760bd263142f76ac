"""Engine plug-ins used by the tests (loaded through EDGERESNET_BACKENDS)."""
