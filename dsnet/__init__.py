"""DSNet-Ops: DSNet detector and the platform that trains, evaluates and ships it."""

__version__ = "0.1.0"
