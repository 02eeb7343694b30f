"""What the scoring driver and the search runner share: layered YAML configs, the run-folder lock, atomic writes, and
the run folder itself (``run_folder``: layout, digests, the one writer and the one verified reader of score files)."""
