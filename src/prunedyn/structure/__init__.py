"""A network's nodes: which layers prune, how nodes are wired, which are dead, and compaction.

- :mod:`~prunedyn.structure.layers`: the prunable layers and their weights;
- :mod:`~prunedyn.structure.nodes`: node layers (producer, consumers at offsets), dead and alive nodes;
- :mod:`~prunedyn.structure.traced`: node layers read off torch-pruning's trace (residual groups);
- :mod:`~prunedyn.structure.surgery`: exact removal of dead nodes (:func:`compact`), FLOPs and parameters;
- :mod:`~prunedyn.structure.grouped`: grouped convolutions in compaction (equal groups);
- :mod:`~prunedyn.structure.alignment`: compact widths rounded up to a multiple (``compact(align=...)``);
- :mod:`~prunedyn.structure.saving`: a compact model saved and loaded as plain tensors.
"""
