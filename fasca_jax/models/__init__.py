"""FASCA-Net model components."""
