"""The installed zoo's version, read from the package metadata.

A bottom-layer module: anything in zoo may import it without importing the
package itself.
"""

import importlib.metadata

try:
    __version__: str = importlib.metadata.version("typed-zoo")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source tree
    __version__ = "0.0.0"
