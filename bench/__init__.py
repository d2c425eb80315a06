"""The benchmark of acknowledgement latency, footprint, batching and scale; run it with `python -m bench`."""
