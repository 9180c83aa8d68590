"""The fake nerdctl's images: ``images --format '{{json .}}'`` and ``rmi``.

Lines and messages follow the real captures in ``tests/fixtures/nerdctl/``:
the ``images`` object has the keys of the nerdctl 2.x line, in its order,
with go-units sizes (``211.9MB``); ``rmi`` prints ``Untagged: …@<digest>``
and ``Deleted: sha256:…``, and refuses an image a container uses with
nerdctl's v1.2.1+ wording (running: "cannot be forced", stopped: "must be
forced"), all errors under one ``N errors:`` fatal line.  ``run`` adds the
image it "pulls" (``pull_size_bytes`` in the state, default 1.5 GB).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from tests.fakes.nerdctl import fake_nerdctl as fake
else:
    # Run by the launcher, the fake is the top-level module `fake_nerdctl`.
    fake = sys.modules.get("fake_nerdctl") or importlib.import_module(
        "tests.fakes.nerdctl.fake_nerdctl"
    )

DEFAULT_PULL_SIZE: Final = 1_500_000_000
_GO_UNITS: Final = ("B", "kB", "MB", "GB", "TB", "PB")


def human_size(size: float) -> str:
    """go-units HumanSize: decimal, four significant digits, no space."""
    unit = 0
    while size >= 1000 and unit < len(_GO_UNITS) - 1:
        size /= 1000
        unit += 1
    return f"{size:.4g}{_GO_UNITS[unit]}"


def familiar(name: str) -> tuple[str, str]:
    """Repository and tag as nerdctl prints them (``nginx``, ``latest``)."""
    repo, _, tag = name.rpartition(":")
    if "/" in tag or not repo:
        repo, tag = name, "<none>"
    for prefix in ("docker.io/library/", "docker.io/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix) :]
            break
    return repo, tag


def add_image(state: fake.State, ref: str, size: int, created: float | None = None) -> None:
    name = fake.normalize_image(ref)
    images = state.setdefault("images", [])
    if any(i["name"] == name for i in images):
        return
    digest = "sha256:" + os.urandom(32).hex()
    images.append(
        {
            "name": name,
            "digest": digest,
            "id": digest[7:19],
            "size": size,
            "created": time.time() if created is None else created,
        }
    )


def pulled(state: fake.State, ref: str) -> None:
    """``run`` pulled ``ref`` (when it was not there yet)."""
    add_image(state, ref, int(state.get("pull_size_bytes") or DEFAULT_PULL_SIZE))


def image_line(image: dict[str, Any]) -> str:
    template = json.loads(fake._fixture("finch_nerdctl_images_format_json_nginx_arm64.jsonl"))
    repo, tag = familiar(image["name"])
    values = {
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(image["created"])),
        "CreatedSince": fake.human_since(time.time() - image["created"]),
        "Digest": image["digest"],
        "ID": image["id"],
        "Repository": repo,
        "Tag": tag,
        "Name": image["name"],
        "Size": human_size(image["size"]),
        "BlobSize": human_size(image["size"] * 0.4),
        "Platform": "linux/amd64",
    }
    assert list(values) == list(template)  # the real line's keys, in its order
    return json.dumps(values, separators=(",", ":"))


def images_command(ctx: fake.Context, args: list[str]) -> int:
    flags = fake._parse_flags(
        args, values={"--format", "--filter"}, bools={"-a", "--all", "-q", "--quiet", "--no-trunc"}
    )
    if flags.value("--format") not in ("json", "{{json .}}"):
        raise fake.Fatal("this fake nerdctl prints images with --format json only")
    for image in fake.snapshot(ctx.state_path).get("images", []):
        print(image_line(image))
    return 0


def _find_image(state: fake.State, ref: str) -> dict[str, Any] | None:
    name = fake.normalize_image(ref)
    images: list[dict[str, Any]] = state.get("images", [])
    for image in images:
        if image["name"] == name or image["id"].startswith(ref) or image["digest"] == ref:
            return image
    return None


def _conflict(ref: str, record: fake.Container) -> str:
    """nerdctl v1.2.1+ wording, from the captures (running: cannot, stopped: must)."""
    if record["status"] == "running":
        text = fake._fixture("nerdctl_rmi_f_running_container_conflict_fata_pre_v2.0.txt")
    else:
        text = fake._fixture("nerdctl_rmi_stopped_container_conflict_fata_RECONSTRUCTED.txt")
    line = text.splitlines()[1]
    old_id = line.rsplit(" ", 1)[1]
    return line.replace("delete alpine ", f"delete {ref} ").replace(old_id, record["id"])


def rmi_command(ctx: fake.Context, args: list[str]) -> int:
    flags = fake._parse_flags(args, values=set(), bools={"-f", "--force", "--async"})
    if not flags.rest:
        raise fake.Fatal('"nerdctl rmi" requires at least 1 argument.')
    force = flags.has("-f", "--force")
    errors: list[str] = []
    with fake.locked(ctx.state_path) as state:
        for ref in flags.rest:
            image = _find_image(state, ref)
            if image is None:
                errors.append(f"no such image: {ref}")
                continue
            users = [c for c in state["containers"] if c["image"] == image["name"]]
            running = [c for c in users if c["status"] == "running"]
            if running or (users and not force):
                errors.append(_conflict(ref, (running or users)[0]))
                continue
            state["images"] = [i for i in state["images"] if i is not image]
            print(f"Untagged: {image['name']}@{image['digest']}")
            print(f"Deleted: sha256:{os.urandom(32).hex()}")
    if errors:
        raise fake.Fatal(fake._errors_text(errors))
    return 0
