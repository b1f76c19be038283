"""The Hugging Face hub: is it reachable, and what to tell a user when it is not.

Offline, ``from_pretrained`` and ``datasets`` retry for ~23 s before failing with a message
that does not say what to do. pytest-icl probes the hub once (2 s, in a daemon thread so a
hanging DNS lookup cannot stall the run) and, when it cannot be reached, switches the Hugging
Face libraries offline so they fail at once, then explains the two fixes.

No huggingface_hub import at module level: it reads ``HF_HUB_OFFLINE`` once, at import, and
the probe's answer may still set that variable.

Example::

    go_offline_if_hub_unreachable()       # before datasets / huggingface_hub are imported
    reason = hub_unreachable_reason()     # None when the hub looks reachable
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 2.0

# Why pytest-icl itself switched the Hugging Face libraries offline, if it did: error messages
# must not blame an HF_HUB_OFFLINE the user never set.
_went_offline_because: str | None = None


def go_offline_if_hub_unreachable() -> None:
    """Make hub and dataset loading fail at once instead of retrying when the hub is unreachable.

    Sets HF_HUB_OFFLINE and HF_DATASETS_OFFLINE unless the user set either; huggingface_hub and
    datasets read them at import, so this runs before they load.
    """
    global _went_offline_because
    if "HF_HUB_OFFLINE" in os.environ or "HF_DATASETS_OFFLINE" in os.environ:
        return
    host, port = probe_target()
    if not can_connect(host, port, PROBE_TIMEOUT_S):
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        _went_offline_because = f"cannot connect to {host}:{port} within {PROBE_TIMEOUT_S:g} s"


def hub_unreachable_reason() -> str | None:
    """Why the hub cannot be used right now, or None if it looks reachable."""
    if _went_offline_because is not None and os.environ.get("HF_HUB_OFFLINE") == "1":
        return _went_offline_because
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var}={os.environ[var]} is set"
    host, port = probe_target()
    if not can_connect(host, port, PROBE_TIMEOUT_S):
        return f"cannot connect to {host}:{port} within {PROBE_TIMEOUT_S:g} s"
    return None


def probe_target() -> tuple[str, int]:
    """The host and port a hub download would connect to first (the proxy, if one is set)."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(_with_scheme(proxy) if proxy else os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    default_port = 443 if url.scheme == "https" else 80
    try:
        port = url.port
    except ValueError:  # environment_problem reports it at start; a library caller gets the default
        port = None
    return url.hostname or "huggingface.co", port or default_port


def _with_scheme(proxy: str) -> str:
    return proxy if "://" in proxy else f"http://{proxy.strip()}"  # how requests reads a proxy without a scheme


# Environment variables read here and by the Hugging Face libraries: switches, and where to connect.
SWITCHES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_SWITCH_WORDS = ("", "0", "1", "on", "off", "yes", "no", "true", "false")
URLS = ("HF_ENDPOINT", "HTTPS_PROXY", "https_proxy")


def environment_problem(environ) -> str | None:
    """One paragraph on the first hub variable whose value is not of its kind, or None (the plugin asks at start)."""
    for name in SWITCHES:
        value = environ.get(name)
        if value is not None and value.strip().lower() not in _SWITCH_WORDS:
            return (
                f"{name}={value!r} is not a switch: set it to 1 (offline) or 0 (online), or unset it. The Hugging Face "
                "libraries take only 1, ON, YES and TRUE as on, so any other word would silently mean online"
            )
    for name in URLS:
        value = environ.get(name)
        if value:
            url = urlparse(value.strip() if name == "HF_ENDPOINT" else _with_scheme(value))
            try:
                url.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
                problem = None if url.scheme in ("http", "https") and url.hostname else "expected http:// or https:// and a host"
            except ValueError as error:
                problem = str(error)
            if problem:
                return f"{name}={value!r} is not a URL pytest-icl can connect to ({problem}); fix it or unset it"
    return None


def can_connect(host: str, port: int, timeout: float) -> bool:
    # DNS lookups ignore socket timeouts and can hang for tens of seconds on a
    # broken resolver, so the whole probe runs in a daemon thread we stop waiting for.
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True, name="pytest-icl-hub-probe")
    thread.start()
    thread.join(timeout)
    return bool(ok)


def offline_message(description: str, repo_id: str, revision: str | None, reason: str) -> str:
    """The two ways to get a hub model onto a machine that cannot reach the hub."""
    from huggingface_hub import constants

    rev = f" --revision {revision}" if revision else ""
    return (
        f"{description} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
        f"and the hub cannot be reached ({reason}). Either:\n"
        f"  1. on a machine with internet, download it into a cache: `hf download {repo_id}{rev}` "
        f"(older huggingface_hub: `huggingface-cli download {repo_id}{rev}`), then copy that "
        "cache here and point HF_HOME (or HF_HUB_CACHE) at it; or\n"
        f"  2. download it to a folder (`hf download {repo_id}{rev} --local-dir ./{repo_id.split('/')[-1]}`) "
        "and pass that folder's path as the model name."
    )


def snapshot_folder(repo_id: str, revision: str | None):
    """The hub cache snapshot folder a load used (its name is the commit hash), or None."""
    from pathlib import Path

    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if not isinstance(found, str):
        return None
    snapshot = Path(found).parent
    return snapshot if snapshot.parent.name == "snapshots" else None
