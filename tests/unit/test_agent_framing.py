"""No frame the agent sends outgrows the protocol's limit."""

from __future__ import annotations

from vectorlay.domain.agent.framing import fit_frame
from vectorlay.domain.messages import (
    MAX_FRAME_BYTES,
    DeployResult,
    Error,
    ReplicaStatus,
    ResultPayload,
    StopResult,
    decode_outbound,
    encode_text,
)


def test_a_result_never_outgrows_a_frame() -> None:
    long_error = "deploy.payload.replica_id: must be 1-64 characters" * 3
    fits = decode_outbound(
        fit_frame(
            DeployResult(
                ResultPayload("r" * (MAX_FRAME_BYTES - 100), ReplicaStatus.FAILED, long_error)
            )
        )
    )
    assert isinstance(fits, DeployResult)
    assert fits.payload.status is ReplicaStatus.FAILED
    hopeless = fit_frame(
        StopResult(ResultPayload("r" * (MAX_FRAME_BYTES - 60), ReplicaStatus.FAILED))
    )
    assert len(hopeless.encode()) <= MAX_FRAME_BYTES
    error = decode_outbound(hopeless)
    assert isinstance(error, Error)
    assert error.payload.message.startswith("stop.payload.replica_id")
    small = DeployResult(ResultPayload("a", ReplicaStatus.RUNNING))
    assert decode_outbound(fit_frame(small)) == small


def test_a_result_that_fits_is_sent_as_encoded() -> None:
    message = StopResult(ResultPayload("r1", ReplicaStatus.FAILED, "x" * 1000))
    assert fit_frame(message) == encode_text(message)


def test_a_result_just_over_the_limit_keeps_its_status_and_replica_id() -> None:
    rid = "r" * (MAX_FRAME_BYTES - 200)
    message = DeployResult(ResultPayload(rid, ReplicaStatus.FAILED, "e" * 500))
    fitted = decode_outbound(fit_frame(message))
    assert isinstance(fitted, DeployResult)
    assert fitted.payload.replica_id == rid
    assert fitted.payload.status is ReplicaStatus.FAILED
    assert fitted.payload.error in ("replica_id too long", None)
