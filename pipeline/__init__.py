"""The DSNet-Ops Kubeflow pipeline: definition (`dsnet_pipeline`) and compiler (`compile`)."""
