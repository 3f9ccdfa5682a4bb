"""The training step (`dsnet.training.train.train`) and its building blocks.

``distributed`` wraps torchrun/DDP, ``optim`` builds SGD and the warm-up + multistep
schedule, ``data`` the loaders, ``loop`` runs one epoch, ``resume`` saves and restores the
resume state, ``history`` writes the per-epoch CSV and ``progress`` draws the progress bar.

May import: dsnet.core, dsnet.io, dsnet.data, dsnet.models, dsnet.tracking, dsnet.inference
"""
