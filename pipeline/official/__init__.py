"""Official benchmark files turned into the project's tables (``gradsign truth nb201``), and a synthetic
writer of such files for tests."""
