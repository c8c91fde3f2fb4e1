"""A token SCORE with integer balances.

Configured in package.json "token" (a channel may override it in channel_manage_data.json's
"score_settings"): `initial_supply` (int) and `owner` (an hx address, or "" for "the sender of the
first transaction"). Amounts are JSON integers or ICON's "0x" hex strings ("0x1f"): an ICON v3
"call" transaction, the one a client signs itself, carries only strings. The supply is credited to the owner when the first transaction is executed;
afterwards the owner may "mint" more. Balances never go negative: a transfer larger than the
sender's balance raises ScoreError before anything is written.

Who may move tokens: a transaction its sender signed itself, or one a peer signed (a v1
transaction, whose sender is the peer that took it from some client it does not name) only when
that peer is the configured owner. So an anonymous REST client of a peer cannot spend that peer's
tokens, or mint as it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from loopchain.blockchain import ScoreBase
from loopchain.blockchain.score_base import BlockView, ScoreContext, ScoreError, TransactionView

MAX_AMOUNT = 2**256 - 1
_ADDRESS = re.compile(r"hx[0-9a-f]{40}")
_HEX_AMOUNT = re.compile(r"0x[0-9a-fA-F]{1,64}")  # 64 digits hold MAX_AMOUNT
OWNER_KEY = "token:owner"
SUPPLY_KEY = "token:total_supply"


def _call(data: Any) -> tuple[str, dict[str, Any]]:
    """Split {"method": str, "params": {...}} into its parts."""
    if not isinstance(data, dict) or not isinstance(data.get("method"), str):
        raise ScoreError('expected {"method": str, "params": {...}}')
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise ScoreError('"params" must be a JSON object')
    return data["method"], params


def _address(value: Any, name: str) -> str:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ScoreError(f"{name} must be an address 'hx' + 40 lowercase hex digits")
    return value


def _amount(value: Any, name: str, minimum: int = 1) -> int:
    """`value` as an int: a JSON integer (v1 transactions) or a "0x" hex string (ICON v3)."""
    if isinstance(value, str) and _HEX_AMOUNT.fullmatch(value):
        value = int(value, 16)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScoreError(f"{name} must be an integer or a '0x' hex string")
    if not minimum <= value <= MAX_AMOUNT:
        raise ScoreError(f"{name} must be between {minimum} and 2**256-1")
    return value


def _balance_key(address: str) -> str:
    return f"balance:{address}"


class UserScore(ScoreBase):
    """transfer and mint by transaction; balance_of, total_supply and owner by query."""

    def __init__(self, context: ScoreContext) -> None:
        """Read and check the token settings of package.json."""
        super().__init__(context)
        settings = context.package_info.get("token", {})
        if not isinstance(settings, dict):
            raise ScoreError('package.json "token" must be an object')
        self.initial_supply = _amount(settings.get("initial_supply", 0), "token.initial_supply", 0)
        owner = settings.get("owner", "")
        self.configured_owner = "" if owner == "" else _address(owner, "token.owner")

    def invoke(self, transaction: TransactionView, block: BlockView) -> dict[str, Any] | None:
        """Credit the initial supply on the first transaction, then apply "transfer" or "mint"."""
        method, params = _call(transaction.data)
        handlers: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "transfer": self._transfer,
            "mint": self._mint,
        }
        if method not in handlers:
            raise ScoreError(f"unknown method {method!r}; expected 'transfer' or 'mint'")
        if transaction.signed_by != "client" and transaction.sender != self.configured_owner:
            raise ScoreError(
                f"{method} refused: peer {transaction.sender} signed this transaction for a client "
                "it does not name; tokens move only by transactions their sender signed, or by "
                "those of the owner peer named in the token settings (token.owner)"
            )
        self._initialize(transaction.sender)
        handlers[method](transaction.sender, params)
        return None

    def query(self, params: str) -> str:
        """Answer "balance_of", "total_supply" or "owner"."""
        try:
            request = json.loads(params)
        except json.JSONDecodeError as exc:
            raise ScoreError(f"query params are not JSON: {exc}") from None
        method, arguments = _call(request)
        if method == "balance_of":
            address = _address(arguments.get("address"), "params.address")
            return json.dumps({"balance": self._balance(address)})
        if method == "total_supply":
            return json.dumps({"total_supply": self.get_json(SUPPLY_KEY, 0)})
        if method == "owner":
            return json.dumps({"owner": self.get_json(OWNER_KEY)})
        raise ScoreError(f"unknown query method {method!r}")

    def _initialize(self, first_sender: str) -> None:
        if self.get_json(OWNER_KEY) is not None:
            return
        owner = self.configured_owner or first_sender
        self.put_json(OWNER_KEY, owner)
        self.put_json(SUPPLY_KEY, self.initial_supply)
        self.put_json(_balance_key(owner), self.initial_supply)

    def _balance(self, address: str) -> int:
        balance = self.get_json(_balance_key(address), 0)
        if isinstance(balance, bool) or not isinstance(balance, int):
            raise ScoreError(f"the stored balance of {address} is not an integer")
        return balance

    def _transfer(self, sender: str, params: dict[str, Any]) -> None:
        to = _address(params.get("to"), "params.to")
        value = _amount(params.get("value"), "params.value")
        available = self._balance(sender)
        if value > available:
            raise ScoreError(f"insufficient balance: {sender} has {available}, needs {value}")
        self.put_json(_balance_key(sender), available - value)
        self.put_json(_balance_key(to), self._balance(to) + value)

    def _mint(self, sender: str, params: dict[str, Any]) -> None:
        owner = self.get_json(OWNER_KEY)
        if sender != owner:
            raise ScoreError(f"only the owner {owner} may mint")
        to = _address(params.get("to", owner), "params.to")
        value = _amount(params.get("value"), "params.value")
        supply = self.get_json(SUPPLY_KEY, 0)
        if supply + value > MAX_AMOUNT:
            raise ScoreError("minting would make the total supply exceed 2**256-1")
        self.put_json(SUPPLY_KEY, supply + value)
        self.put_json(_balance_key(to), self._balance(to) + value)
