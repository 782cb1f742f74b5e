"""The book's own code: its chapters' figures, tables and verdicts, its cached runs and its build.

Not public API: these modules serve the chapters of this study (``chapters/``) and change with
them. The library proper (core, structure, data, models, tasks, run, analysis, plots) never
imports them; the ``prunedyn`` command (:mod:`prunedyn.cli`) does, for ``prunedyn book``.

- :mod:`~prunedyn.book.study`: the book's profiles and cached runs (``seeded_comparison``);
- :mod:`~prunedyn.book.build`: executing the chapters (papermill) and building the HTML;
- :mod:`~prunedyn.book.tradeoffs`, :mod:`~prunedyn.book.tradeoff_plots`: the recorded sweeps'
  fronts and phase grids (chapters 5 and 9); :mod:`~prunedyn.book.fronts`: the fronts read on
  the validation split (chapter 9);
- :mod:`~prunedyn.book.baselines`: the methods' comparison tables (chapters 6-9);
- :mod:`~prunedyn.book.competence`: the referee's gate for dense references (chapter 9);
- :mod:`~prunedyn.book.conv_report`, :mod:`~prunedyn.book.architecture`: conv nets' per-layer
  filter death and its figures (chapters 6 and 8);
- :mod:`~prunedyn.book.segmentation`: the U-Net's figures (chapter 7);
- :mod:`~prunedyn.book.saliency`, :mod:`~prunedyn.book.xray`: occlusion and gradient saliency,
  the X-ray CNN's figures (chapter 8);
- :mod:`~prunedyn.book.sampling`: the kernels on real weights and the shrinkage paths
  (chapters 1 and 2).
"""
