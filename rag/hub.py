"""Loading from a Hugging Face hub id or a local folder without hanging when there is no network.

Try the local cache first; go online only when the hub answers a quick TCP probe, so an offline
machine fails in milliseconds with a readable reason instead of minutes of retries.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import urlparse

T = TypeVar("T")


def hub_reachable(timeout_s: float = 3.0) -> bool:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def load_from_hub_or_folder(source: str, load: Callable[[bool], T]) -> T:
    """Call load(local_files_only) for a local folder, a cached hub id, or (if reachable) the hub."""
    if Path(source).expanduser().exists():
        return load(True)
    try:
        return load(True)
    except (OSError, ValueError):
        if not hub_reachable():
            raise OSError(f"{source!r} is not in the local Hugging Face cache and the hub cannot be reached") from None
        return load(False)
