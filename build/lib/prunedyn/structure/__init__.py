"""A network's nodes: which layers prune, how nodes are wired, which are dead, and compaction.

- :mod:`~prunedyn.structure.layers`: the prunable layers and their weights;
- :mod:`~prunedyn.structure.nodes`: node layers (producer, consumers at offsets), dead and alive nodes;
- :mod:`~prunedyn.structure.surgery`: exact removal of dead nodes (:func:`compact`), FLOPs and parameters.
"""
