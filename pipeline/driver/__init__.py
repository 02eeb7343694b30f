"""``gradsign score``: the config schema, data batches, shards, Ray dispatch, run identity, resume and progress."""
