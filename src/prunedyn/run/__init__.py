"""Running the study: config -> run -> record.

- :mod:`~prunedyn.run.config`: experiment configs (YAML, presets, ``--set`` overrides, validation);
- :mod:`~prunedyn.run.experiments`: one training run, resumable, writing its records;
- :mod:`~prunedyn.run.records`: atomic writes and the tidy tables of a run folder;
- :mod:`~prunedyn.run.folders`: a run folder's files, lock, checks and readers;
- :mod:`~prunedyn.run.sweeps`: grids of configs times seeds, in parallel;
- :mod:`~prunedyn.run.backends`: the one process pool (and Ray) that sweeps and the book use.

The ``prunedyn`` command is :mod:`prunedyn.cli`; the book's cached runs and its build are
:mod:`prunedyn.book`.
"""
