"""The driver side: configs, data batches, shards, Ray dispatch, the reducer, reports and the CLI.

The only package that talks to Ray and to disk.
"""
