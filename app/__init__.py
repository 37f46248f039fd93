"""driftdeck: watch a data folder, detect drift, and keep models honest."""

__version__ = "0.1.0"
