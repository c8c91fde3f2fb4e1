"""The rule for channel names: a name becomes a directory name on every peer (its block store) and a
label in logs and metrics, so it is 1 to 64 letters, digits, '_', '.' or '-', not starting with '.'
or '-' (never '..', never a path)."""

from __future__ import annotations

import re
from typing import TypeGuard

MAX_CHANNEL_NAME = 64
# Channels a RadioStation serves (so grants a peer at most): each is a block store, a SCORE process
# and links on every peer of it.
MAX_CHANNELS = 256
CHANNEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
RULE = f"1 to {MAX_CHANNEL_NAME} letters, digits, '_', '.' or '-', starting with a letter, digit or '_'"


def is_channel_name(name: object) -> TypeGuard[str]:
    """Whether `name` is a string that follows the rule."""
    return isinstance(name, str) and CHANNEL_NAME.fullmatch(name) is not None
