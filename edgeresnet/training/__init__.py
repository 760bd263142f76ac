"""Training: the loop, fine-tuning from --init weights, and torchrun's distributed wrapper."""
