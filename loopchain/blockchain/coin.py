"""The channel's native coin, ICX: balances, transfers and fees, kept in the SCORE's state.

Amounts are integers in loop (1 ICX = 10**18 loop). The genesis block's accounts are credited when
it is executed; the total supply is their sum and never changes, because fees are paid to the
treasury account rather than burnt. A v3 transaction pays `steps used x STEP_PRICE`, where its steps
follow ICON's schedule (a default per transaction, a price per byte of `data`, a surcharge for a
SCORE call); a sender is never charged more than it holds, so no balance goes below zero.

The coin's keys start with a NUL byte (RESERVED_PREFIX); the engine refuses them to SCORE code, so
a SCORE can neither read nor forge a balance.
"""

from __future__ import annotations

from typing import Any

from loopchain.blockchain.score_base import StateAccess
from loopchain.types import canonical

ICX = 10**18
STEP_PRICE = 12_500_000_000  # loop per step (ICON's 12.5 Gloop)
STEP_DEFAULT = 100_000  # every transaction
STEP_INPUT_PER_BYTE = 200  # per byte of the canonical JSON of `data`
STEP_CONTRACT_CALL = 25_000  # a dataType "call"
MAX_AMOUNT = 2**256 - 1
TREASURY = "hx1000000000000000000000000000000000000000"  # receives the fees

RESERVED_PREFIX = b"\x00"  # state keys of the engine, refused to SCORE code
_PREFIX = RESERVED_PREFIX + b"icx:"
_SUPPLY = _PREFIX + b"supply"

# Failure codes of a v3 result (goloop's numbering; "failure.code" in hex)
UNKNOWN_FAILURE = 1
CONTRACT_NOT_FOUND = 2
METHOD_NOT_FOUND = 3
OUT_OF_STEP = 10
OUT_OF_BALANCE = 11
REVERTED = 32  # the SCORE refused or failed


def steps_for(data_type: str | None, data: Any) -> int:
    """The steps a v3 transaction uses (the same on every peer: a function of what is signed)."""
    steps = intake_steps(data)
    if data_type == "call":
        steps += STEP_CONTRACT_CALL
    return steps


def intake_steps(data: Any) -> int:
    """The steps a v3 transaction's stepLimit must cover to be taken at all: every
    transaction's and its data's (ICON's nodes refuse one below them as NotEnoughStep); a call's
    own steps may still run out in its block."""
    steps = STEP_DEFAULT
    if data is not None:
        steps += STEP_INPUT_PER_BYTE * len(canonical.encode(data))
    return steps


def _balance_key(address: str) -> bytes:
    return _PREFIX + b"balance:" + address.encode("ascii")


def _read_int(raw: bytes | None) -> int:
    return 0 if raw is None else int(raw.decode("ascii"))


class Ledger:
    """Balances over a SCORE state view (an overlay while a transaction runs, else committed)."""

    def __init__(self, db: StateAccess) -> None:
        self.db = db

    def balance(self, address: str) -> int:
        return _read_int(self.db.get(_balance_key(address)))

    def total_supply(self) -> int:
        return _read_int(self.db.get(_SUPPLY))

    def _set(self, address: str, amount: int) -> None:
        if not 0 <= amount <= MAX_AMOUNT:
            raise ValueError(f"balance of {address} out of range: {amount}")
        key = _balance_key(address)
        if amount:
            self.db.put(key, str(amount).encode("ascii"))
        else:
            self.db.delete(key)

    def transfer(self, sender: str, to: str, amount: int) -> None:
        """Move `amount`; ValueError, with nothing written, when it is negative, the sender holds
        less, or the recipient would hold more than MAX_AMOUNT."""
        if amount < 0:
            raise ValueError(f"a transfer of {amount} loop: amounts are not negative")
        held = self.balance(sender)
        if held < amount:
            raise ValueError(f"{sender} holds {held} loop, needs {amount}")
        if amount == 0 or sender == to:
            return
        after = self.balance(to) + amount
        if after > MAX_AMOUNT:
            raise ValueError(f"{to} would hold more than {MAX_AMOUNT} loop")
        self._set(sender, held - amount)
        self._set(to, after)

    def mint_genesis(self, accounts: list[tuple[str, int]]) -> None:
        """Credit the genesis accounts and record their sum as the total supply."""
        for address, amount in accounts:
            self._set(address, self.balance(address) + amount)
        self.db.put(_SUPPLY, str(self.total_supply() + sum(a for _, a in accounts)).encode())
