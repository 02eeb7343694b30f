"""Developer tools: benchmarks, throughput sweeps, device-op counts, peer checks. Never imported by the
``gradsign`` commands."""
