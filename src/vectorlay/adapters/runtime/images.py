"""Images of the engine, for image garbage collection: list them, see which are used, remove one.

The command lines are in :mod:`.argv`, the parsing of each engine's output
in its module (:mod:`.nerdctl`, which Docker's output also fits, and
:mod:`.podman`), as the engine's dialect names them.  Which images are used
comes from ``ps -a`` over every container, not only this agent's.  ``rmi``
is never forced; a conflict (a container uses the image) is an error like
any other.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from vectorlay.adapters.commands import run_command
from vectorlay.adapters.runtime.argv import images_argv, ps_all_argv, rmi_argv
from vectorlay.adapters.runtime.engines import load_dialect
from vectorlay.adapters.runtime.stderr import failure
from vectorlay.domain.agent.imagegc import Image
from vectorlay.errors import ContainerRuntimeError, RuntimeNotInstalled, RuntimeTimeout

if TYPE_CHECKING:
    from vectorlay.ports import ImageRuntime

log = logging.getLogger(__name__)

OUTPUT_LIMIT: Final = 4 * 1024 * 1024
STDERR_TAIL: Final = 16 * 1024


class NerdctlImages:
    """The :class:`~vectorlay.ports.ImageRuntime` port on nerdctl's command line."""

    def __init__(
        self, *, nerdctl: str = "nerdctl", engine: str = "nerdctl", call_timeout: float = 60.0
    ) -> None:
        self._nerdctl = nerdctl  # the engine's command
        self._timeout = call_timeout
        # Docker prints nerdctl's line shapes, Podman one JSON array: the
        # engine's dialect knows which (and loads only that engine's parsers).
        self._dialect = load_dialect(engine)

    async def images(self) -> Sequence[Image]:
        text = await self._call(images_argv(self._nerdctl, self._dialect.ps_format), "images")
        return self._dialect.parse_images(text)

    async def images_in_use(self) -> set[str]:
        text = await self._call(ps_all_argv(self._nerdctl, self._dialect.ps_format), "ps -a")
        return self._dialect.parse_images_in_use(text)

    async def remove_image(self, ref: str) -> None:
        await self._call(rmi_argv(self._nerdctl, ref), "rmi")

    async def _call(self, argv: Sequence[str], what: str) -> str:
        result = await run_command(
            argv, timeout=self._timeout, limit=OUTPUT_LIMIT, stderr_tail=STDERR_TAIL
        )
        if result.error is not None:
            raise RuntimeNotInstalled(f"cannot run {self._nerdctl}: {result.error}")
        command = f"{self._dialect.name} {what}"
        if result.timed_out:
            raise RuntimeTimeout(f"{command} did not finish within {self._timeout:g} s")
        if result.returncode is None:
            raise ContainerRuntimeError(f"{command} printed more than {OUTPUT_LIMIT} bytes")
        if result.returncode != 0:
            raise failure(result.returncode, result.stderr.decode("utf-8", "replace"))
        return result.stdout.decode("utf-8", "replace")


if TYPE_CHECKING:
    _: ImageRuntime = NerdctlImages()

__all__ = ["NerdctlImages"]
