"""Reading finished runs: seeds, node dynamics and speed (records in, tables out).

- :mod:`~prunedyn.analysis.seeds`: spread over seeds and paired differences;
- :mod:`~prunedyn.analysis.dependency`: node death dynamics and in/out weight dependency;
- :mod:`~prunedyn.analysis.latency`: dense, masked, sparse and compact inference times.
"""
