"""Measuring engines: timing (warm-up, percentiles), the latency method (interleaved rounds of
per-process blocks), accuracy on real images, and the bench command's run."""
