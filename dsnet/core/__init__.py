"""Shared building blocks every other package uses.

`errors` (``InputError`` -> CLI exit 2, ``DataValidationError``), `fsutil` (atomic writes),
`config` (``params.yaml`` loading, overrides, hashes), `torchfile` (safe ``torch.load``),
`device` (device, CPU threads and AMP selection).

May import: (nothing)
"""
