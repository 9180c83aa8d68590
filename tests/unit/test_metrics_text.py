"""The metrics text, parsed with prometheus_client's own parser."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from vectorlay.app.agent.metrics import render_metrics


def snapshot(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "started_at": "2026-01-01T00:00:00.000Z",
        "connected": False,
        "ready": None,
        "session": {"reconnects": 0},
        "heartbeats_sent": 0,
        "gpus": [],
        "replicas": [],
        "outbox": {"length": 0, "dropped": 0, "sent": 0},
        "deploys": {},
        "image_gc": {"runs": 0, "images_removed": 0, "bytes_freed": 0},
        "disk": None,
    }
    data.update(changes)
    return data


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_a_fresh_agent() -> None:
    found = samples(render_metrics(snapshot()))
    assert found[("vectorlay_agent_connected", ())] == 0
    assert ("vectorlay_agent_ready", ()) not in found  # unknown until the first probe
    assert ("vectorlay_agent_disk_free_bytes", ()) not in found
    assert found[("vectorlay_agent_start_time_seconds", ())] == 1767225600
    # Every status has a series from the start, so rates and alerts see zeros.
    assert {dict(k[1])["status"] for k in found if k[0] == "vectorlay_agent_replicas"} == {
        "pending",
        "running",
        "exited",
        "failed",
        "stopped",
    }


def test_gpus_by_assignability_and_health_where_reported() -> None:
    gpus = [
        {"driver": "vfio-pci", "iommu_group": "1"},
        {"driver": "vfio-pci", "iommu_group": "2", "assignable": False, "health": "failed"},
        {"driver": "nvidia", "iommu_group": "3"},
        {"driver": "vfio-pci", "iommu_group": "4", "assignable": True, "health": "ok"},
    ]
    found = samples(render_metrics(snapshot(gpus=gpus, ready=True)))
    gpu = {k[1]: v for k, v in found.items() if k[0] == "vectorlay_agent_gpus"}
    assert gpu == {
        (("assignable", "true"), ("health", "unknown")): 1,
        (("assignable", "false"), ("health", "failed")): 1,
        (("assignable", "false"), ("health", "unknown")): 1,
        (("assignable", "true"), ("health", "ok")): 1,
    }
    assert found[("vectorlay_agent_ready", ())] == 1


def test_counters_and_label_escaping() -> None:
    text = render_metrics(
        snapshot(
            connected=True,
            session={"reconnects": 3},
            heartbeats_sent=12,
            outbox={"length": 1, "dropped": 2, "sent": 5},
            deploys={"running": 4, 'we"ird\\\n': 1},
            image_gc={"runs": 2, "images_removed": 3, "bytes_freed": 30_000_000_000},
            disk={"free_bytes": 412 * 2**30, "total_bytes": 1000 * 2**30},
        )
    )
    assert "# TYPE vectorlay_agent_deploys_total counter" in text
    found = samples(text)
    assert found[("vectorlay_agent_session_reconnects_total", ())] == 3
    assert found[("vectorlay_agent_heartbeats_sent_total", ())] == 12
    assert found[("vectorlay_agent_results_sent_total", ())] == 5
    assert found[("vectorlay_agent_results_dropped_total", ())] == 2
    assert found[("vectorlay_agent_outbox_results", ())] == 1
    assert found[("vectorlay_agent_deploys_total", (("outcome", "running"),))] == 4
    assert found[("vectorlay_agent_deploys_total", (("outcome", 'we"ird\\\n'),))] == 1
    assert found[("vectorlay_agent_image_gc_runs_total", ())] == 2
    assert found[("vectorlay_agent_image_gc_images_removed_total", ())] == 3
    assert found[("vectorlay_agent_image_gc_freed_bytes_total", ())] == 30_000_000_000
    assert found[("vectorlay_agent_disk_free_bytes", ())] == 412 * 2**30
    assert found[("vectorlay_agent_disk_size_bytes", ())] == 1000 * 2**30
