"""Genesis accounts of a channel: who holds the native coin (ICX, 18 decimals) at height 0.

Amounts are in loop (10**-18 ICX). The JSON shape, in channel_manage_data.json (`"genesis_data"`)
and, as canonical JSON text, in the channel's validator set (so the genesis block records it):

    {"accounts": [{"name": str, "address": "hx" + 40 lowercase hex,
                   "balance": "0x" + 1..64 lowercase hex digits}], "message"?: str, "nid"?: str,
     "score_step_limit"?: str, "leader_block_creation_limit"?: str}

`nid` is the channel's network id for ICON v3 transactions ("0x1" to "0xffffffff", as ICON writes
it), in place of the peers' ICON_NID. A v3 transaction names its network and no channel, so the
nid is what keeps one signed for a channel from being valid in another: channels that share one
(every channel without its own takes ICON_NID) take each other's v3 transactions, replayed.

`score_step_limit` ("0x1" to "0x7fffffff", as ICON writes integers) is the channel's SCORE step
limit, in place of the peers' SCORE_STEP_LIMIT. It decides results (a transaction past it fails
with 9000), so it must be one value on every peer: stated here, it is recorded in the genesis block
with the rest, and the SCORE takes it from the genesis block it executes (a chain's limit is its
genesis block's: one stated once the chain exists is not taken), where each peer's own setting could
differ and split their votes.

`leader_block_creation_limit` ("0x1" to "0xffff") is the channel's leader turn, in place of the
peers' LEADER_BLOCK_CREATION_LIMIT (taken as they take it: at least 3 rounds, rules.turn_for).
Validators refuse a proposal from a peer whose turn it is not by their count, so a peer set to
another turn than the others proposed out of turn and refused theirs; stated here, every peer of
the channel takes the one value, fixed by the genesis block as score_step_limit is.

Refused (EncodingError naming the field): unknown keys, wrong types, an address that is not an
account ("hx"), one address listed twice, more than MAX_GENESIS_ACCOUNTS accounts, an empty name or
one longer than MAX_NAME_CHARS, a message longer than MAX_MESSAGE_CHARS, a balance above
MAX_BALANCE (2**256 - 1, which "0x" and at most 64 digits already bounds), and balances adding up to
more than MAX_BALANCE (a total supply must be a 256-bit T_INT too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from loopchain.types import canonical
from loopchain.types.canonical import EncodingError
from loopchain.types.icon_tx import InvalidTransaction, check_address, hex_int

MAX_GENESIS_ACCOUNTS = 1000
MAX_NAME_CHARS = 64
MAX_MESSAGE_CHARS = 1000
MAX_BALANCE = 2**256 - 1
MAX_NID = 2**32 - 1
MAX_SCORE_STEP_LIMIT = 2**31 - 1  # as SCORE_STEP_LIMIT itself (a configured integer)
MAX_LEADER_TURN = 0xFFFF  # rounds a leader leads in a row (18 hours of 1 s blocks)
_NID = re.compile(r"0x[1-9a-f][0-9a-f]{0,7}")  # as ICON writes it: no leading zeros, not 0

_KEYS = frozenset({"accounts", "message", "nid", "score_step_limit", "leader_block_creation_limit"})
_ACCOUNT_KEYS = frozenset({"name", "address", "balance"})
_ACCOUNT_FIELDS: dict[str, type | tuple[type, ...]] = {"name": str, "address": str, "balance": str}


@dataclass(frozen=True)
class GenesisAccount:
    """An account funded at genesis: a label, its address and its balance in loop."""

    name: str
    address: str
    balance: int


@dataclass(frozen=True)
class GenesisData:
    """The accounts a channel starts with, and a free-form message."""

    accounts: tuple[GenesisAccount, ...]
    message: str = ""
    nid: int | None = None  # the channel's network id; None: the peers' ICON_NID
    score_step_limit: int | None = None  # None: the peers' SCORE_STEP_LIMIT
    leader_block_creation_limit: int | None = None  # None: the peers' LEADER_BLOCK_CREATION_LIMIT

    def __post_init__(self) -> None:
        if len(self.accounts) > MAX_GENESIS_ACCOUNTS:
            raise EncodingError(
                f"'accounts' lists {len(self.accounts)} accounts, more than {MAX_GENESIS_ACCOUNTS}"
            )
        seen: set[str] = set()
        for index, account in enumerate(self.accounts):
            _check_account(f"accounts[{index}]", account, seen)
        if not isinstance(self.message, str) or len(self.message) > MAX_MESSAGE_CHARS:
            raise EncodingError(f"'message' must be a string of at most {MAX_MESSAGE_CHARS} chars")
        if self.total_supply > MAX_BALANCE:
            raise EncodingError("'accounts': the balances add up to more than 2**256 - 1")
        if self.nid is not None and (type(self.nid) is not int or not 0 < self.nid <= MAX_NID):
            raise EncodingError("'nid' must be a network id from 0x1 to 0xffffffff")
        limit = self.score_step_limit
        if limit is not None and (type(limit) is not int or not 0 < limit <= MAX_SCORE_STEP_LIMIT):
            raise EncodingError("'score_step_limit' must be from 0x1 to 0x7fffffff")
        turn = self.leader_block_creation_limit
        if turn is not None and (type(turn) is not int or not 0 < turn <= MAX_LEADER_TURN):
            raise EncodingError("'leader_block_creation_limit' must be from 0x1 to 0xffff")

    @property
    def total_supply(self) -> int:
        """The sum of the genesis balances, in loop."""
        return sum(account.balance for account in self.accounts)

    @classmethod
    def from_json(cls, value: Any) -> GenesisData:
        """Genesis data from its JSON value; EncodingError naming the field for anything else."""
        obj = canonical.check_fields(value, {"accounts": list}, _KEYS)
        raw = obj["accounts"]
        if len(raw) > MAX_GENESIS_ACCOUNTS:
            raise EncodingError(
                f"'accounts' lists {len(raw)} accounts, more than {MAX_GENESIS_ACCOUNTS}"
            )
        message = obj.get("message", "")
        if not isinstance(message, str):
            raise EncodingError("field 'message' must be a string")
        canonical.check_value(value)  # valid Unicode in the names and the message
        nid = obj.get("nid")
        if "nid" in obj and not (isinstance(nid, str) and _NID.fullmatch(nid)):
            raise EncodingError(
                "field 'nid' must be a network id as ICON writes it, '0x1' to '0xffffffff' "
                "(lowercase hex, no leading zeros)"
            )
        accounts = tuple(_account(f"accounts[{i}]", a) for i, a in enumerate(raw))
        return cls(
            accounts,
            message,
            int(nid, 16) if nid is not None else None,
            _hex_field(obj, "score_step_limit"),
            _hex_field(obj, "leader_block_creation_limit"),
        )

    @classmethod
    def decode(cls, text: str) -> GenesisData:
        """Genesis data from the text `encoded` makes; EncodingError for anything else (another
        spelling of the same data too, so that one genesis has one text and one hash)."""
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            raise EncodingError(
                "genesis data must be valid Unicode (found a lone surrogate)"
            ) from None
        data = cls.from_json(canonical.decode(raw))
        if data.encoded() != text:
            raise EncodingError("genesis data is not in canonical form (balances in minimal hex)")
        return data

    def to_json(self) -> dict[str, Any]:
        """The JSON shape `from_json` reads; balances as minimal lowercase "0x" hex."""
        accounts = [
            {"name": a.name, "address": a.address, "balance": hex(a.balance)} for a in self.accounts
        ]
        return {
            "accounts": accounts,
            **({"message": self.message} if self.message else {}),
            **({"nid": hex(self.nid)} if self.nid is not None else {}),
            **(
                {"score_step_limit": hex(self.score_step_limit)}
                if self.score_step_limit is not None
                else {}
            ),
            **(
                {"leader_block_creation_limit": hex(self.leader_block_creation_limit)}
                if self.leader_block_creation_limit is not None
                else {}
            ),
        }

    def encoded(self) -> str:
        """The canonical JSON text of `to_json()`."""
        return canonical.encode(self.to_json()).decode("utf-8")


def _hex_field(obj: dict[str, Any], name: str) -> int | None:
    """The integer field `name` of `obj` as ICON writes one ("0x" and hex), None when absent."""
    if name not in obj:
        return None
    value = obj[name]
    if not isinstance(value, str):
        raise EncodingError(f"field {name!r} must be a string ('0x' and hex)")
    try:
        return hex_int(value, name)
    except InvalidTransaction as exc:
        raise EncodingError(exc.message) from None


def _account(where: str, value: Any) -> GenesisAccount:
    if not isinstance(value, dict):
        raise EncodingError(f"'{where}' must be an object")
    try:
        obj = canonical.check_fields(value, _ACCOUNT_FIELDS, _ACCOUNT_KEYS)
    except EncodingError as exc:
        raise EncodingError(f"'{where}': {exc}") from None
    try:
        balance = hex_int(obj["balance"], f"{where}.balance")
    except InvalidTransaction as exc:
        raise EncodingError(exc.message) from None
    return GenesisAccount(obj["name"], obj["address"], balance)


def _check_account(where: str, account: GenesisAccount, seen: set[str]) -> None:
    name, address, balance = account.name, account.address, account.balance
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        raise EncodingError(f"'{where}.name' must be 1 to {MAX_NAME_CHARS} characters")
    try:
        check_address(address, f"{where}.address", eoa=True)
    except InvalidTransaction as exc:
        raise EncodingError(exc.message) from None
    except TypeError:  # not a string
        raise EncodingError(f"'{where}.address' must be a string") from None
    if address in seen:
        raise EncodingError(f"'{where}.address' {address} is listed twice")
    seen.add(address)
    if type(balance) is not int or not 0 <= balance <= MAX_BALANCE:
        raise EncodingError(f"'{where}.balance' must be an integer from 0 to 2**256 - 1")
