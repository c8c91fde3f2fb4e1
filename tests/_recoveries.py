"""Counting the signer keys a test's transactions have recovered (the costly part of a check)."""

from __future__ import annotations

import pytest

from loopchain.types import transaction as transaction_module


def count_recoveries(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The digests whose signer's key is recovered from now on, in order."""
    recovered: list[bytes] = []
    real = transaction_module.recover_address

    def counted(digest: bytes, signature: bytes) -> str:
        recovered.append(digest)
        return real(digest, signature)

    monkeypatch.setattr(transaction_module, "recover_address", counted)
    return recovered
