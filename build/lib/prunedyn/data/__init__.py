"""Data sets: the embedded copies (checksummed), torchvision's, and the targets made from them.

- :mod:`~prunedyn.data.datasets`: loading, splitting, caching and augmenting;
- :mod:`~prunedyn.data.targets`: per-pixel classes from instance labels.
"""
