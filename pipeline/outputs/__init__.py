"""What a run hands on: the reducer (correlations, top-k), summary/report/plots, ``gradsign report`` and
``gradsign compare``, whole-space results tables, and reading a run folder back (``read_run``)."""
