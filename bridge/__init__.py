"""studio-bridge: a control bridge for recording studios."""

__version__ = "0.1.0"
__all__ = ["__version__"]
