"""Running the study: config -> run -> record.

- :mod:`~prunedyn.run.config`: experiment configs (YAML, presets, ``--set`` overrides, validation);
- :mod:`~prunedyn.run.experiments`: one training run, resumable, writing its records;
- :mod:`~prunedyn.run.records`: atomic writes and the tidy tables of a run folder;
- :mod:`~prunedyn.run.sweeps`: grids of configs times seeds, in parallel;
- :mod:`~prunedyn.run.study`: the book's profiles and cached runs;
- :mod:`~prunedyn.run.book`: executing the chapters and building the book;
- :mod:`~prunedyn.run.cli`: the ``prunedyn`` command.
"""
