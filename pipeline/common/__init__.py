"""What the scoring driver and the search runner share: layered YAML configs, the run-folder lock, atomic writes."""
