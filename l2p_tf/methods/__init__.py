"""Continual-learning methods, one module each, on the contract of `base.Method`."""
