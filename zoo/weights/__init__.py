"""Pretrained weights: manifest, sources, cache and state-dict conversion."""
