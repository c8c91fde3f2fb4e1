"""Counting the signer keys a test's transactions have recovered (the costly part of a check)."""

from __future__ import annotations

from types import ModuleType

import pytest

from loopchain.types import transaction as transaction_module


def count_recoveries(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType = transaction_module
) -> list[bytes]:
    """The digests whose signer's key is recovered from now on, in order, by `module`'s checks
    (a transaction's; icon_tx's for a v3 client's params)."""
    recovered: list[bytes] = []
    real = module.recover_address

    def counted(digest: bytes, signature: bytes) -> str:
        recovered.append(digest)
        return str(real(digest, signature))

    monkeypatch.setattr(module, "recover_address", counted)
    return recovered
