"""The package's version, in one place (read by packaging, the CLI and exported sources)."""

__version__ = "0.2.0.dev0"
