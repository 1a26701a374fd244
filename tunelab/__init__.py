"""tunelab: adapt open models to your own data and compare the ways of doing it."""

__version__ = "0.1.0"
