"""Rules for values that come off the wire: replica ids, images, env vars.

Each ``check_*`` raises :class:`~vectorlay.errors.ValidationError` naming the
field; messages never repeat an env value (values are secrets).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from vectorlay.errors import ValidationError

REPLICA_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A PCI function as the agent writes it: domain (4 hex digits, more for the
# domains above ffff that Intel VMD uses), bus, slot, function.
PCI_ADDRESS_RE: Final = re.compile(r"[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")
IOMMU_GROUP_RE: Final = re.compile(r"[0-9]{1,9}")
MAX_ENV_VARS: Final = 512
MAX_ENV_VALUE_CHARS: Final = 64 * 1024
MAX_GPU_COUNT: Final = 256

# OCI / distribution reference grammar:
#   reference := name [":" tag] ["@" digest]
#   name      := [domain "/"] path-component ["/" path-component]*
#   domain    := host [":" port]          host: DNS name, IPv4 or [IPv6]
#   path-component := [a-z0-9]+ (separator [a-z0-9]+)*   separator: . _ __ -+
#   tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
#   digest    := algorithm ":" hex{32,}   (sha256 exactly 64, sha512 128)
_DOMAIN_COMPONENT: Final = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME: Final = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6: Final = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST: Final = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN: Final = rf"{_HOST}(?::[0-9]{{1,5}})?"
_ALNUM: Final = r"[a-z0-9]+"
_SEPARATOR: Final = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT: Final = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH: Final = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG: Final = r"[\w][\w.-]{0,127}"
_DIGEST: Final = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_RE: Final = re.compile(
    rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
MAX_IMAGE_NAME: Final = 255
_DIGEST_HEX_LEN: Final = {"sha256": 64, "sha384": 96, "sha512": 128}


def check_replica_id(value: Any, field: str = "replica_id") -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"expected str, got {type(value).__name__}")
    if not REPLICA_ID_RE.fullmatch(value):
        raise ValidationError(
            field,
            "must be 1-64 characters of [A-Za-z0-9_.-] starting with a letter or digit",
        )
    return value


def check_image(value: Any, field: str = "image") -> str:
    """An OCI image reference ``[registry[:port]/]name[:tag][@digest]``."""
    if not isinstance(value, str):
        raise ValidationError(field, f"expected str, got {type(value).__name__}")
    if not value:
        raise ValidationError(field, "must not be empty")
    match = IMAGE_RE.fullmatch(value)
    if match is None:
        raise ValidationError(field, f"not a valid image reference: {_show(value)}")
    domain, path, digest = match.group("domain"), match.group("path"), match.group("digest")
    if domain is not None and not _looks_like_registry(domain):
        # "library/ubuntu": the first component is a path, and then it must
        # obey the lowercase path grammar, which the regex already checked.
        path = f"{domain}/{path}"
    name_len = len(path) + (len(domain) + 1 if domain else 0)
    if name_len > MAX_IMAGE_NAME:
        raise ValidationError(field, f"image name longer than {MAX_IMAGE_NAME} characters")
    if domain is not None and not _looks_like_registry(domain) and not re.fullmatch(_PATH, domain):
        raise ValidationError(field, f"not a valid image reference: {_show(value)}")
    if domain is not None and _looks_like_registry(domain):
        _check_port(domain, field)
    if digest is not None:
        algorithm, _, hex_part = digest.partition(":")
        want = _DIGEST_HEX_LEN.get(algorithm)
        # The registered algorithms are lowercase hex of a fixed length
        # (OCI image spec); containerd refuses anything else.
        if want is not None and (len(hex_part) != want or hex_part != hex_part.lower()):
            raise ValidationError(
                field, f"{algorithm} digest must be {want} lowercase hex characters"
            )
    return value


def _check_port(domain: str, field: str) -> None:
    _, sep, port = domain.rpartition(":")
    # "[::1]" has colons but no port; a port follows the last "]" if any.
    if sep and "]" not in port and not 0 < int(port) <= 65535:
        raise ValidationError(field, f"registry port out of range: {port}")


def _looks_like_registry(component: str) -> bool:
    # The same rule docker and containerd use to tell a registry host from
    # the first path component.
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or (component != component.lower())
    )


def check_env_vars(value: Any, field: str = "env_vars") -> dict[str, str]:
    """Env names ``[A-Za-z_][A-Za-z0-9_]*``; values without NUL/CR/LF or edge whitespace."""
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"expected object, got {type(value).__name__}")
    if len(value) > MAX_ENV_VARS:
        raise ValidationError(field, f"more than {MAX_ENV_VARS} variables")
    for name, val in value.items():
        if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
            raise ValidationError(field, f"invalid variable name {_show(str(name))}")
        where = f"{field}.{name}"
        if not isinstance(val, str):
            raise ValidationError(where, f"expected str, got {type(val).__name__}")
        problem = env_value_problem(val)
        if problem:
            raise ValidationError(where, problem)
    return dict(value)


def env_value_problem(value: str) -> str | None:
    """Why a value cannot travel through an env file unchanged, or ``None``.

    The text never contains the value itself.
    """
    if "\x00" in value:
        return "value contains a NUL character"
    if "\n" in value or "\r" in value:
        return "value contains a line break"
    if value != value.strip():
        return "value has leading or trailing whitespace"
    if len(value) > MAX_ENV_VALUE_CHARS:
        return f"value longer than {MAX_ENV_VALUE_CHARS} characters"
    return None


def check_gpu_count(value: Any, field: str = "gpu_count") -> int:
    # bool is a subclass of int in Python; the wire treats it as a different type.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"expected int, got {type(value).__name__}")
    if value < 0:
        raise ValidationError(field, "must be >= 0")
    if value > MAX_GPU_COUNT:
        raise ValidationError(field, f"must be <= {MAX_GPU_COUNT}")
    return value


def _show(value: str, limit: int = 80) -> str:
    clipped = value if len(value) <= limit else value[:limit] + "…"
    return repr(clipped)
