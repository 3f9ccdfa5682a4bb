"""The model lifecycle in the MLflow registry: gate, register, review, promote, roll back.

`registry/` holds the parts (docs/lifecycle.md).

May import: dsnet.core, dsnet.data, dsnet.models, dsnet.tracking, dsnet.inference,
dsnet.evaluation
"""
