"""Data: WHO classes, the embedded synthetic lumbar-CT data set, the HU baseline, previews.

Submodules are imported on use (``from dsnet.data import synth``); this package imports
nothing heavy so that ``import dsnet.data`` stays cheap.
"""
