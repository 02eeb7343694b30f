"""Scoring: proxies (one file each, registered by name), the per-sample-gradient engines, scorer actors.

Nothing here reads configs or files; ``actors.scorer`` turns arch rows into score rows given a space,
a data batch and a run seed.
"""
