"""kinevid models.

Submodules (import them explicitly; they pull in torch, which this package file does not):
``vitpose`` (the network), ``checkpoints`` (weights registry, cache, official-checkpoint loading),
``heatmap`` (decoding and flip-test helpers), ``topdown`` (crops, batching, device choice).
"""
