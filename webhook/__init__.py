"""pullcheck: admit only container images the cluster's runtimes can pull and run."""

__version__ = "0.1.0"
