"""OpenAI-compatible, batched, streaming inference server (the image this repo deploys)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("inference-server")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+source"
