"""FASCA-Net in JAX/Flax."""
