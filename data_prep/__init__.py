"""TFDS dataset builders and feature extraction. Each builder lives in a module named after it."""
