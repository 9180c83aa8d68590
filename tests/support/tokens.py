"""The credentials and the secret env value every test uses.

One value per role, so that a leak check searches for the same strings
everywhere; each is distinctive enough never to appear in a log by chance,
and none contains a comma (``VECTORLAY_CP_ORG_TOKENS`` is comma-separated).
"""

from __future__ import annotations

from typing import Final

ORG_TOKEN: Final = "org-tok-Secret-5f1d2c3b4a"
"""What an agent registers with; the control plane accepts it."""

ADMIN_TOKEN: Final = "admin-tok-Secret-9f8e7d6c"
"""The control plane's admin API credential."""

NODE_TOKEN: Final = "node-tok-Secret-5e4f3a2b1c"
"""What a control plane hands a registered node (a scripted peer, a saved identity)."""

SECRET: Final = "s3cr3t-value-7a6b5c"
"""An env value of a deploy: it may reach the container's env file, nothing else."""
