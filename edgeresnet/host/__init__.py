"""Facts about the machine this process runs on (memory now; CPU and devices to follow)."""
