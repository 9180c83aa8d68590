"""What the agent sends fits in one frame: results cut down to the protocol's limit."""

from __future__ import annotations

import msgspec

from vectorlay.domain.messages import (
    MAX_FRAME_BYTES,
    DeployResult,
    ErrorCode,
    Message,
    StopResult,
    encode_text,
    error_message,
)


def fit_frame(message: Message) -> str:
    """The message as a text frame no larger than the protocol's limit.

    Only a result can outgrow it: it echoes a replica id, which a broken
    control plane may have made nearly 1 MiB long.  The error text is cut
    first, then dropped; a result that still cannot fit becomes an error.
    """
    text = encode_text(message)
    # A character takes at most four bytes in UTF-8: most frames need no encoding to know.
    if len(text) * 4 <= MAX_FRAME_BYTES or len(text.encode()) <= MAX_FRAME_BYTES:
        return text
    if isinstance(message, DeployResult | StopResult):
        kind = "deploy" if isinstance(message, DeployResult) else "stop"
        payload = message.payload
        for error in ("replica_id too long", None):
            shorter = msgspec.structs.replace(payload, error=error)
            text = encode_text(type(message)(shorter))
            if len(text.encode()) <= MAX_FRAME_BYTES:
                return text
        return encode_text(
            error_message(
                ErrorCode.INVALID_MESSAGE,
                f"{kind}.payload.replica_id: too long to be answered in a frame",
            )
        )
    return text
