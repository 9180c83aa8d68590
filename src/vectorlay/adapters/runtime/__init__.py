"""The container runtime adapter: replicas as engine containers (nerdctl, Kata micro-VMs).

One concern per module:

- :mod:`.argv`: every command line the runtime runs, and the checks before
  a value reaches one.
- :mod:`.labels`: the labels a container carries and the GPU encoding in them.
- :mod:`.envfile`: the private ``--env-file`` that carries env values.
- :mod:`.output`: ``inspect`` objects read into replica states.
- :mod:`.stderr`: nerdctl's logrus error text read into :mod:`vectorlay.errors`.
- :mod:`.events`: the long-lived ``events`` process and its restarts.
- :mod:`.engines`: the engines (nerdctl, Docker, Podman) and their default
  OCI runtimes; :mod:`.dialect`: what one engine does its own way.
- :mod:`.nerdctl`, :mod:`.docker`, :mod:`.podman`: each engine's ``ps``
  output, event lines and error texts.
- :mod:`.runtime`: :class:`EngineRuntime` (also ``NerdctlRuntime``), the
  ``Runtime`` port.

The names below are loaded on first use, so that reading a default (the
settings read :data:`DEFAULT_OCI_RUNTIME`) does not load the process and
async machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from vectorlay.adapters.runtime.argv import (
        check_spec,
        events_argv,
        inspect_argv,
        ps_argv,
        rm_argv,
        run_argv,
        stop_argv,
    )
    from vectorlay.adapters.runtime.dialect import Dialect
    from vectorlay.adapters.runtime.engines import (
        DEFAULT_ENGINE,
        ENGINES,
        default_oci_runtime,
        load_dialect,
    )
    from vectorlay.adapters.runtime.envfile import env_file_bytes, prepare_env_dir
    from vectorlay.adapters.runtime.labels import (
        GPU_SEPARATOR,
        LABEL_GPUS,
        LABEL_REPLICA_ID,
        parse_gpu_label,
    )
    from vectorlay.adapters.runtime.nerdctl import (
        DEFAULT_OCI_RUNTIME,
        ContainerEvent,
        parse_event,
        parse_ps,
    )
    from vectorlay.adapters.runtime.output import Listed, PsEntry, parse_inspect, replica_status
    from vectorlay.adapters.runtime.runtime import EngineRuntime, NerdctlRuntime
    from vectorlay.adapters.runtime.stderr import error_class, nerdctl_error

# Public name -> the module (in this package) that defines it.
_HOMES: Final = {
    "DEFAULT_ENGINE": "engines",
    "DEFAULT_OCI_RUNTIME": "nerdctl",
    "Dialect": "dialect",
    "ENGINES": "engines",
    "EngineRuntime": "runtime",
    "default_oci_runtime": "engines",
    "load_dialect": "engines",
    "GPU_SEPARATOR": "labels",
    "LABEL_GPUS": "labels",
    "LABEL_REPLICA_ID": "labels",
    "ContainerEvent": "nerdctl",
    "Listed": "output",
    "NerdctlRuntime": "runtime",
    "PsEntry": "output",
    "check_spec": "argv",
    "env_file_bytes": "envfile",
    "error_class": "stderr",
    "events_argv": "argv",
    "inspect_argv": "argv",
    "nerdctl_error": "stderr",
    "parse_event": "nerdctl",
    "parse_gpu_label": "labels",
    "parse_inspect": "output",
    "parse_ps": "nerdctl",
    "prepare_env_dir": "envfile",
    "ps_argv": "argv",
    "replica_status": "output",
    "rm_argv": "argv",
    "run_argv": "argv",
    "stop_argv": "argv",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


__all__ = [
    "DEFAULT_ENGINE",
    "DEFAULT_OCI_RUNTIME",
    "ENGINES",
    "GPU_SEPARATOR",
    "LABEL_GPUS",
    "LABEL_REPLICA_ID",
    "ContainerEvent",
    "Dialect",
    "EngineRuntime",
    "Listed",
    "NerdctlRuntime",
    "PsEntry",
    "check_spec",
    "default_oci_runtime",
    "env_file_bytes",
    "error_class",
    "events_argv",
    "inspect_argv",
    "load_dialect",
    "nerdctl_error",
    "parse_event",
    "parse_gpu_label",
    "parse_inspect",
    "parse_ps",
    "prepare_env_dir",
    "ps_argv",
    "replica_status",
    "rm_argv",
    "run_argv",
    "stop_argv",
]
