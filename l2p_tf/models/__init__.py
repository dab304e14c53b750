"""Vision Transformer, prompt pool and the L2P classifier."""
