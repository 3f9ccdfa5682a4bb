"""Building blocks of the training step (`dsnet.training.train.train`).

``device`` picks the device and CPU threads, ``distributed`` wraps torchrun/DDP,
``optim`` builds SGD and the warm-up + multistep schedule, ``data`` the loaders,
``loop`` runs one epoch, ``resume`` saves and restores the resume state, ``history``
writes the per-epoch CSV and ``progress`` draws the progress bar.
"""
