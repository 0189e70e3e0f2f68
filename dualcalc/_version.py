"""The library version: a leaf module, so anything (the caches, the command line) can read it
without importing the package's heavier modules."""

__version__ = "0.1.0"
