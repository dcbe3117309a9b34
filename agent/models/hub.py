"""Whether weights can be downloaded right now, asked once for every loader (GLM-4, diffusers).

Without this, a machine with no network retries downloads for about a minute before failing.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit


def hub_unavailable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be used now (offline mode, or unreachable), or ``None``."""
    from huggingface_hub import constants

    flag = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().lower()
    if constants.HF_HUB_OFFLINE or flag in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    parts = urlsplit(constants.ENDPOINT)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 443), timeout=timeout):
            return None
    except OSError:
        return f"{constants.ENDPOINT} cannot be reached"
