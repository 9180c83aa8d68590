"""Why a node refuses a deploy: shutting down, or a host that is not ready."""

from __future__ import annotations

import msgspec

from vectorlay.adapters.memory import sample_report
from vectorlay.domain.agent.refusals import deploy_refusal
from vectorlay.domain.messages import Dependency


def test_a_ready_node_that_is_not_stopping_takes_deploys() -> None:
    assert deploy_refusal(stopping=False, report=sample_report(ready=True)) is None


def test_a_stopping_agent_refuses_even_on_a_ready_host() -> None:
    assert (
        deploy_refusal(stopping=True, report=sample_report(ready=True))
        == "node is draining: the agent is shutting down"
    )


def test_shutting_down_is_the_reason_given_on_a_degraded_host_too() -> None:
    refusal = deploy_refusal(stopping=True, report=sample_report(ready=False))
    assert refusal == "node is draining: the agent is shutting down"


def test_a_degraded_host_names_every_dependency_not_ready_in_order() -> None:
    deps = [
        Dependency("containerd", False, None, "not running"),
        Dependency("nerdctl", True, "2.0.0"),
        Dependency("vfio", False, None, "missing modules: vfio_pci"),
    ]
    report = msgspec.structs.replace(sample_report(ready=False), dependencies=deps)
    assert (
        deploy_refusal(stopping=False, report=report)
        == "node is degraded: dependencies not ready: containerd, vfio"
    )


def test_the_refusal_never_carries_a_dependency_detail() -> None:
    refusal = deploy_refusal(stopping=False, report=sample_report(ready=False))
    assert refusal == "node is degraded: dependencies not ready: vfio"
