"""The one home of the Kubeflow Training Operator PyTorchJob for scale-out ``dsnet train``.

`manifest` builds the manifest (also rendered for the GPU overlay); `run` stages a
pipeline step's inputs, creates the job and follows it to the end.
"""
