"""Where each container engine keeps its images by default.

The ``disk`` dependency and image garbage collection measure the
filesystem under this directory unless ``--image-store`` names another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

IMAGE_STORES: Final = {
    "nerdctl": Path("/var/lib/containerd"),
    "docker": Path("/var/lib/docker"),
    "podman": Path("/var/lib/containers/storage"),
}
DEFAULT_ENGINE: Final = "nerdctl"


def default_image_store(engine: str = DEFAULT_ENGINE) -> Path:
    """The engine's image store; the nerdctl one for an engine not listed."""
    return IMAGE_STORES.get(engine, IMAGE_STORES[DEFAULT_ENGINE])


__all__ = ["IMAGE_STORES", "default_image_store"]
