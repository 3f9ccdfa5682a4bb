"""The model registry, in parts (docs/lifecycle.md)."""
