"""What a run hands on: the reducer (correlations, top-k), summary/report/plots, ``gradsign report`` and
``gradsign compare``, and whole-space results tables. The
run folder itself (layout, digests, the verified reader, ``read_run``) is ``pipeline/common/run_folder.py``."""
