"""The container engines the agent can drive, and what each takes by default.

nerdctl, Docker and Podman share the ``run``/``stop``/``rm``/``inspect``
command line; they differ in ``ps`` and ``events`` output, in their error
texts and in how a runtime is named.  Those differences live in one module
per engine (:mod:`.nerdctl`, :mod:`.docker`, :mod:`.podman`), each exporting
a :class:`~vectorlay.adapters.runtime.dialect.Dialect`.

Importing this module is cheap (no process, async or JSON machinery): the
settings read the defaults from here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from vectorlay.adapters.runtime.dialect import Dialect

ENGINES: Final = ("nerdctl", "docker", "podman")
DEFAULT_ENGINE: Final = "nerdctl"

# Kata's containerd shim, which nerdctl and Docker >= 23 take directly.
KATA_SHIM: Final = "io.containerd.kata.v2"

# What `--runtime` names on each engine.  Podman takes a name from the
# [engine.runtimes] table of its containers.conf, where Kata is "kata" -- but
# only Kata 1.x (end of life) still has the OCI command line Podman drives;
# docs/runtime.md says so.
DEFAULT_OCI_RUNTIMES: Final = {"nerdctl": KATA_SHIM, "docker": KATA_SHIM, "podman": "kata"}


def default_oci_runtime(engine: str) -> str:
    return DEFAULT_OCI_RUNTIMES[engine]


def load_dialect(engine: str) -> Dialect:
    """The :class:`Dialect` of ``engine`` (one of :data:`ENGINES`)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown container engine {engine!r}; one of {', '.join(ENGINES)}")
    module = importlib.import_module(f"vectorlay.adapters.runtime.{engine}")
    dialect: Dialect = module.DIALECT
    return dialect


__all__ = [
    "DEFAULT_ENGINE",
    "DEFAULT_OCI_RUNTIMES",
    "ENGINES",
    "KATA_SHIM",
    "default_oci_runtime",
    "load_dialect",
]
