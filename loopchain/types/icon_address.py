"""The ICON contract address that stands for a channel's SCORE in JSON-RPC v3 answers.

A loopchain channel runs one SCORE package, loaded from its configuration rather than deployed by
a transaction, so it has no ICON contract address of its own. Answers that need one (the `to` of a
peer-signed v1 transaction's result; later, the `to` an icx_call names) use
"cx" + the last 20 bytes of SHA3-256("loopchain.channel_score." + the channel's name): stable,
different for every channel, and never ICON's "cx" + 40 zeros, which means "deploy".
"""

from __future__ import annotations

from loopchain.types.hashing import sha3_256

_DOMAIN = b"loopchain.channel_score."


def channel_score_address(channel: str) -> str:
    """The "cx…" address of `channel`'s SCORE."""
    return "cx" + sha3_256(_DOMAIN + channel.encode("utf-8"))[-20:].hex()
