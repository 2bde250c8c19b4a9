"""impactstudy: a platform-ecosystem impact study as one reproducible program."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("impactstudy")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
