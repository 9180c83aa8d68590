"""vectorlay: the node agent of a GPU cloud, and the library behind it."""

__version__ = "0.1.0"

__all__ = ["__version__"]
