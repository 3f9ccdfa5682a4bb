"""Benchmarks (``dsnet bench ...``): speed and memory targets, measured, never asserted.

May import: dsnet.core, dsnet.io, dsnet.data, dsnet.models, dsnet.synth, dsnet.inference,
dsnet.training, dsnet.evaluation
"""
