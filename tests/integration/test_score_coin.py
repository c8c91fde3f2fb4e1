"""The native coin executed by the SCORE process's LoadedScore (real LevelDB state, real SCORE
packages from score/ or written here) and by the real SCORE process: the genesis mint, transfers,
fees, each failure code, calls into the channel's SCORE, reserved keys, determinism, and v1
transactions executed exactly as before."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from loopchain.blockchain import coin
from loopchain.blockchain.block_store import BlockStore
from loopchain.blockchain.coin import STEP_PRICE, TREASURY, steps_for
from loopchain.blockchain.execution import SCORE_ERROR, SUCCESS, TxResult, next_state_root
from loopchain.configure import DEFAULTS
from loopchain.protos import score_pb2 as pb
from loopchain.scoreservice import MAX_BALANCE_ADDRESSES
from loopchain.scoreservice.client import ScoreClient, ScoreUnavailable
from loopchain.scoreservice.packages import resolve_package
from loopchain.scoreservice.process import LoadedScore, Refused
from loopchain.storage import open_store
from loopchain.types import canonical
from loopchain.types.block import Block
from loopchain.types.crypto import Signer
from loopchain.types.genesis import GenesisAccount, GenesisData
from loopchain.types.hashing import EMPTY_ROOT, merkle_root, sha3_256
from loopchain.types.icon_address import channel_score_address
from loopchain.types.icon_tx import make_params, sign_params, verify_send_params
from loopchain.types.transaction import Transaction
from loopchain.types.validators import ValidatorSet
from tests.integration._score_helpers import (
    KV_SCORE,
    make_supervisor,
    running,
    score_config,
    write_package,
)
from tests.integration._storage_helpers import BASE_TIME_US, CHANNEL, ChainBuilder
from tools.procs import ROOT

ICX = coin.ICX
KVSTORE = ROOT / "score" / "sample" / "kvstore"
RAISES = ROOT / "score" / "test" / "raises"
SCORE_ADDRESS = channel_score_address(CHANNEL)
OTHER_CX = "cx" + "12" * 20
DEPLOY_CX = "cx" + "0" * 40
STEP_LIMIT = int(DEFAULTS["SCORE_STEP_LIMIT"])

RICH = Signer(bytes([1]) * 32)  # 1000 ICX
POOR = Signer(bytes([2]) * 32)  # 1 ICX: pays a fee, not a fee and its value
DUST = Signer(bytes([3]) * 32)  # 1000 loop: less than any fee
BROKE = Signer(bytes([4]) * 32)  # never funded
BOB_KEY = Signer(bytes([5]) * 32)  # receives, and later spends
BOB = BOB_KEY.address
GENESIS = ((RICH, 1000 * ICX), (POOR, ICX), (DUST, 1000))
SUPPLY = sum(amount for _, amount in GENESIS)
FEE = coin.STEP_DEFAULT * STEP_PRICE  # a plain transfer's

# A SCORE that touches whatever key a transaction names (hex), for the reserved-key checks.
KEYS_SCORE = """
from loopchain.blockchain.score_base import ScoreBase


class UserScore(ScoreBase):
    def invoke(self, transaction, block):
        data = transaction.data
        params = data.get("params", {})
        key = bytes.fromhex(params["key"])
        if data["method"] == "write":
            self.db.put(key, b"999999999999999999999999")
        elif data["method"] == "read":
            self.put_json("seen", repr(self.db.get(key)))
        elif data["method"] == "delete":
            self.db.delete(key)
        return None

    def query(self, params):
        return repr(self.db.get(bytes.fromhex(params)))
"""


def balance_key(address: str) -> bytes:
    return b"\x00icx:balance:" + address.encode()


SUPPLY_KEY = b"\x00icx:supply"


class CoinChain:
    """Valid signed blocks of CHANNEL: a genesis block funding GENESIS, then blocks of given txs."""

    def __init__(
        self,
        genesis: tuple[tuple[Signer, int], ...] | None = GENESIS,
        score_step_limit: int | None = None,
    ) -> None:
        self.builder = ChainBuilder()
        self.genesis = genesis
        self.score_step_limit = score_step_limit  # what the genesis data states, if any
        self._count = itertools.count(1)

    def validators_with(self, genesis: tuple[tuple[Signer, int], ...] | None) -> ValidatorSet:
        data = ""
        if genesis is not None:
            accounts = tuple(
                GenesisAccount(f"account{i}", s.address, amount)
                for i, (s, amount) in enumerate(genesis)
            )
            stated = GenesisData(accounts, "test genesis", score_step_limit=self.score_step_limit)
            data = stated.encoded()
        plain = dataclasses.replace(self.builder.validators, genesis=data, signature=b"")
        return plain.signed_by(Signer.generate())

    def genesis_block(self, *, update: bool = True) -> Block:
        builder = self.builder
        block = Block.create(
            channel=CHANNEL,
            height=0,
            round_=0,
            prev_hash=b"",
            prev_qc=None,
            transactions=[],
            timestamp=BASE_TIME_US,
            leader=builder.signers[0],
            next_leader=builder.signers[1].address,
            validators_hash=builder.validators.hash,
            validator_update=self.validators_with(self.genesis) if update else None,
        )
        assert block.check_integrity() is None
        builder.advance(block, builder.certify(block))
        return block

    def next(self, *txs: Transaction, update: ValidatorSet | None = None) -> Block:
        builder = self.builder
        height = builder.height + 1
        block = Block.create(
            channel=CHANNEL,
            height=height,
            round_=0,
            prev_hash=builder.prev_hash,
            prev_qc=builder.prev_qc,
            transactions=list(txs),
            timestamp=BASE_TIME_US + height,
            leader=builder.signers[height % 4],
            next_leader=builder.signers[(height + 1) % 4].address,
            validators_hash=builder.validators.hash,
            validator_update=update,
        )
        assert block.check_integrity() is None
        builder.advance(block, builder.certify(block))
        return block

    def icx(
        self,
        signer: Signer,
        to: str,
        *,
        value: int | None = None,
        step_limit: int = 1_000_000,
        data_type: str | None = None,
        data: Any = None,
    ) -> Transaction:
        """A client-signed v3 transaction, checked as a peer checks it."""
        n = next(self._count)
        params = make_params(
            sender=signer.address,
            to=to,
            step_limit=step_limit,
            timestamp_us=BASE_TIME_US + n,
            nid=3,
            value=value,
            nonce=n,
            data_type=data_type,
            data=data,
        )
        return Transaction.from_icon(verify_send_params(sign_params(params, signer)))

    def v1(self, data: Any) -> Transaction:
        """A peer-signed v1 transaction (its sender: the chain's first validator)."""
        n = next(self._count)
        return Transaction.create_v1(CHANNEL, data, BASE_TIME_US + n, self.builder.signers[0])


def kv_set(key: str, value: str) -> dict[str, Any]:
    return {"method": "set", "params": {"key": key, "value": value}}


@pytest.fixture
def open_scores(tmp_path: Path) -> Iterator[Any]:
    opened: list[LoadedScore] = []

    def load(package: Path = KVSTORE, name: str = "state") -> LoadedScore:
        request = pb.LoadRequest(
            channel=CHANNEL, package_path=str(package), state_path=str(tmp_path / name)
        )
        score = LoadedScore(request, STEP_LIMIT)
        opened.append(score)
        return score

    yield load
    for score in opened:
        score.state.store.close()


def execute(score: LoadedScore, block: Block) -> tuple[list[TxResult], bytes, bytes]:
    """Invoke and commit one block, as the peer's runtime does."""
    staged = score.invoke_block(block)
    score.state.commit(block.height)
    return staged


def outcomes(results: list[TxResult]) -> list[tuple[str, int, str, int]]:
    """What the coin decides of each result (hash, code, message, steps)."""
    return [(r.tx_hash, r.code, r.message, r.steps) for r in results]


def balance(score: LoadedScore, address: str) -> tuple[int, int, int]:
    """(balance, total supply, executed height) as the SCORE process answers them."""
    reply = score.balance(pb.BalanceRequest(addresses=[address]))
    (held_,) = reply.balances
    return int(held_), int(reply.total_supply), reply.height


def held(score: LoadedScore, address: str) -> int:
    return balance(score, address)[0]


def supply(score: LoadedScore) -> int:
    return balance(score, TREASURY)[1]


def holdings(score: LoadedScore, *addresses: str) -> int:
    return sum(held(score, a) for a in {*addresses, TREASURY})


def funded(open_scores: Any, package: Path = KVSTORE) -> tuple[LoadedScore, CoinChain]:
    score, chain = open_scores(package), CoinChain()
    execute(score, chain.genesis_block())
    return score, chain


def kv_get(score: LoadedScore, key: str) -> Any:
    return canonical.parse(score.query(canonical.encode({"method": "get", "params": {"key": key}})))


# -- the genesis block


def test_the_genesis_block_mints_its_accounts_and_the_supply(open_scores: Any) -> None:
    score, chain = open_scores(), CoinChain()
    block = chain.genesis_block()
    results, state_root, results_hash = score.invoke_block(block)
    assert results == [] and results_hash == EMPTY_ROOT
    writes = {balance_key(s.address): str(amount).encode() for s, amount in GENESIS}
    assert state_root == next_state_root(EMPTY_ROOT, {**writes, SUPPLY_KEY: str(SUPPLY).encode()})
    assert balance(score, RICH.address) == (0, 0, -1)  # answers come from committed state only
    score.state.commit(0)
    for signer, amount in GENESIS:
        assert balance(score, signer.address) == (amount, SUPPLY, 0)
    assert held(score, BROKE.address) == held(score, TREASURY) == 0
    assert SUPPLY == 1000 * ICX + ICX + 1000


def test_a_genesis_block_without_genesis_accounts_mints_nothing(open_scores: Any) -> None:
    for name, chain, update in (
        ("no_update", CoinChain(), False),  # no validator set in the block
        ("no_genesis", CoinChain(genesis=None), True),  # a set stating no accounts
    ):
        score = open_scores(name=name)
        _, state_root, _ = execute(score, chain.genesis_block(update=update))
        assert state_root == next_state_root(EMPTY_ROOT, {})
        assert supply(score) == held(score, RICH.address) == 0


def test_genesis_accounts_in_a_later_validator_update_mint_nothing(open_scores: Any) -> None:
    score, chain = funded(open_scores)
    richer = ((RICH, 10**6 * ICX), (BROKE, 5 * ICX))
    prev_root = score.state.state_root
    _, state_root, _ = execute(score, chain.next(update=chain.validators_with(richer)))
    assert state_root == next_state_root(prev_root, {})  # nothing written at all
    assert supply(score) == SUPPLY
    assert held(score, RICH.address) == 1000 * ICX and held(score, BROKE.address) == 0


# -- transfers, fees and failures


def test_a_transfer_moves_its_value_and_pays_steps_to_the_treasury(open_scores: Any) -> None:
    score, chain = funded(open_scores)
    tx = chain.icx(RICH, BOB, value=5 * ICX, step_limit=100_000)
    prev_root = score.state.state_root
    results, state_root, _ = execute(score, chain.next(tx))
    writes = {
        balance_key(RICH.address): str(1000 * ICX - 5 * ICX - FEE).encode(),
        balance_key(BOB): str(5 * ICX).encode(),
        balance_key(TREASURY): str(FEE).encode(),
    }
    assert state_root == next_state_root(prev_root, writes)
    assert outcomes(results) == [(tx.hash_hex, SUCCESS, "", 100_000)]
    assert held(score, RICH.address) == 1000 * ICX - 5 * ICX - FEE
    assert held(score, BOB) == 5 * ICX
    assert held(score, TREASURY) == FEE == 1_250_000_000_000_000
    assert supply(score) == SUPPLY == holdings(score, RICH.address, POOR.address, DUST.address, BOB)


def test_out_of_step_moves_nothing_and_charges_the_step_limit(open_scores: Any) -> None:
    score, chain = funded(open_scores)
    short = chain.icx(RICH, BOB, value=ICX, step_limit=99_999)
    data = kv_set("k", "v")
    call = chain.icx(
        RICH, SCORE_ADDRESS, data_type="call", data=data, step_limit=steps_for("call", data) - 1
    )
    results, _, _ = execute(score, chain.next(short, call))
    assert [(r.code, r.steps) for r in results] == [
        (coin.OUT_OF_STEP, 99_999),
        (coin.OUT_OF_STEP, steps_for("call", data) - 1),
    ]
    assert "out of step: uses 100000 steps, limit 99999" in results[0].message
    charged = (99_999 + steps_for("call", data) - 1) * STEP_PRICE
    assert held(score, RICH.address) == 1000 * ICX - charged
    assert held(score, BOB) == 0 and held(score, TREASURY) == charged
    assert kv_get(score, "k") == {"value": None}  # the SCORE never ran
    assert supply(score) == SUPPLY


def test_exactly_enough_steps_is_not_out_of_step(open_scores: Any) -> None:
    score, chain = funded(open_scores)
    data = kv_set("k", "v")
    call = chain.icx(
        RICH, SCORE_ADDRESS, data_type="call", data=data, step_limit=steps_for("call", data)
    )
    results, _, _ = execute(score, chain.next(call))
    assert (results[0].code, results[0].steps) == (SUCCESS, steps_for("call", data))
    assert kv_get(score, "k") == {"value": "v"}


def test_out_of_balance_moves_nothing_and_charges_at_most_what_the_sender_holds(
    open_scores: Any,
) -> None:
    score, chain = funded(open_scores)
    value_and_fee = chain.icx(POOR, BOB, value=ICX, step_limit=100_000)  # holds ICX, needs more
    dust = chain.icx(DUST, BOB, step_limit=100_000)  # holds 1000 loop, the fee is more
    broke = chain.icx(BROKE, BOB, step_limit=100_000)  # holds nothing
    results, _, _ = execute(score, chain.next(value_and_fee, dust, broke))
    assert [(r.code, r.steps) for r in results] == [(coin.OUT_OF_BALANCE, 100_000)] * 3
    assert results[0].message == (
        f"out of balance: {POOR.address} holds {ICX} loop, needs {ICX} + fee {FEE}"
    )
    assert held(score, POOR.address) == ICX - FEE
    assert held(score, DUST.address) == 0 and held(score, BROKE.address) == 0
    assert held(score, BOB) == 0
    assert held(score, TREASURY) == FEE + 1000
    assert supply(score) == SUPPLY
    assert score.state.read_committed(balance_key(DUST.address)) is None  # deleted, not "0"


def test_a_message_is_a_transfer_paying_for_its_bytes(open_scores: Any) -> None:
    score, chain = funded(open_scores)
    tx = chain.icx(RICH, BOB, value=3, data_type="message", data="hello, chain")
    results, _, _ = execute(score, chain.next(tx))
    steps = 100_000 + 200 * len('"hello, chain"')
    assert outcomes(results) == [(tx.hash_hex, SUCCESS, "", steps)]
    assert held(score, BOB) == 3
    assert held(score, RICH.address) == 1000 * ICX - 3 - steps * STEP_PRICE


# -- calls


def test_a_call_runs_the_channel_score_with_its_value(open_scores: Any) -> None:
    score, chain = funded(open_scores)
    data = kv_set("colour", "blue")
    tx = chain.icx(RICH, SCORE_ADDRESS, value=2 * ICX, data_type="call", data=data)
    results, _, _ = execute(score, chain.next(tx))
    steps = 100_000 + 200 * len(canonical.encode(data)) + 25_000
    assert outcomes(results) == [(tx.hash_hex, SUCCESS, "", steps)]
    assert kv_get(score, "colour") == {"value": "blue"}
    assert held(score, SCORE_ADDRESS) == 2 * ICX
    assert held(score, RICH.address) == 1000 * ICX - 2 * ICX - steps * STEP_PRICE
    assert (
        supply(score)
        == SUPPLY
        == holdings(score, RICH.address, POOR.address, DUST.address, SCORE_ADDRESS)
    )


def test_a_call_the_score_refuses_reverts_all_but_the_fee(open_scores: Any) -> None:
    score, chain = funded(open_scores)
    first = chain.icx(RICH, SCORE_ADDRESS, data_type="call", data=kv_set("a", "1"))
    refused_data = {"method": "nope", "params": {"key": "a"}}
    refused = chain.icx(RICH, SCORE_ADDRESS, value=2 * ICX, data_type="call", data=refused_data)
    after = chain.icx(RICH, SCORE_ADDRESS, data_type="call", data=kv_set("b", "2"))
    results, _, _ = execute(score, chain.next(first, refused, after))
    assert [r.code for r in results] == [SUCCESS, coin.REVERTED, SUCCESS]
    assert results[1].message == "ScoreError: unknown method 'nope'; expected 'set' or 'delete'"
    assert results[1].steps == steps_for("call", refused_data)
    assert kv_get(score, "a") == {"value": "1"} and kv_get(score, "b") == {"value": "2"}
    assert held(score, SCORE_ADDRESS) == 0  # the value went back with the SCORE's refusal
    fees = sum(r.steps for r in results) * STEP_PRICE
    assert held(score, RICH.address) == 1000 * ICX - fees
    assert held(score, TREASURY) == fees and supply(score) == SUPPLY


def test_a_raising_score_keeps_none_of_its_writes_nor_the_value(open_scores: Any) -> None:
    score, chain = funded(open_scores, RAISES)
    data = {"method": "anything"}
    tx = chain.icx(RICH, SCORE_ADDRESS, value=7 * ICX, data_type="call", data=data)
    prev_root = score.state.state_root
    results, state_root, _ = execute(score, chain.next(tx))
    steps = steps_for("call", data)
    assert outcomes(results) == [
        (tx.hash_hex, coin.REVERTED, "RuntimeError: test/raises always fails", steps)
    ]
    # the block wrote the fee and nothing else (not the SCORE's key, not the value)
    fee = steps * STEP_PRICE
    writes = {
        balance_key(RICH.address): str(1000 * ICX - fee).encode(),
        balance_key(TREASURY): str(fee).encode(),
    }
    assert state_root == next_state_root(prev_root, writes)
    assert score.state.read_committed(b"written-before-raising") is None
    assert held(score, SCORE_ADDRESS) == 0


def test_a_call_to_another_contract_and_unsupported_data_types_fail_with_the_fee(
    open_scores: Any,
) -> None:
    score, chain = funded(open_scores)
    data = kv_set("x", "1")
    elsewhere = chain.icx(RICH, OTHER_CX, value=ICX, data_type="call", data=data)
    deploy_data = {"contentType": "application/zip", "content": "0x504b"}
    deploy = chain.icx(RICH, DEPLOY_CX, value=ICX, data_type="deploy", data=deploy_data)
    deposit_data = {"action": "add"}
    deposit = chain.icx(RICH, SCORE_ADDRESS, value=ICX, data_type="deposit", data=deposit_data)
    results, _, _ = execute(score, chain.next(elsewhere, deploy, deposit))
    assert [(r.code, r.message, r.steps) for r in results] == [
        (coin.CONTRACT_NOT_FOUND, f"no SCORE at {OTHER_CX}", steps_for("call", data)),
        (
            coin.UNKNOWN_FAILURE,
            "dataType 'deploy' is not supported",
            steps_for("deploy", deploy_data),
        ),
        (
            coin.UNKNOWN_FAILURE,
            "dataType 'deposit' is not supported",
            steps_for("deposit", deposit_data),
        ),
    ]
    assert held(score, OTHER_CX) == held(score, DEPLOY_CX) == held(score, SCORE_ADDRESS) == 0
    assert kv_get(score, "x") == {"value": None}
    fees = sum(r.steps for r in results) * STEP_PRICE
    assert held(score, RICH.address) == 1000 * ICX - fees == 1000 * ICX - held(score, TREASURY)


@pytest.mark.parametrize("data_type", [None, "message"])
def test_value_sent_to_a_contract_that_is_not_there_fails_and_moves_nothing(
    open_scores: Any, data_type: str | None
) -> None:
    score, chain = funded(open_scores)
    data = "hi" if data_type else None
    tx = chain.icx(RICH, OTHER_CX, value=5 * ICX, data_type=data_type, data=data)
    results, _, _ = execute(score, chain.next(tx))
    assert results[0].code != SUCCESS
    assert held(score, OTHER_CX) == 0
    assert held(score, RICH.address) == 1000 * ICX - results[0].steps * STEP_PRICE


def test_fees_reach_the_treasury_and_the_supply_never_changes(open_scores: Any) -> None:
    score, chain = funded(open_scores)
    everyone = [RICH.address, POOR.address, DUST.address, BROKE.address, BOB, SCORE_ADDRESS]
    blocks = [
        chain.next(
            chain.icx(RICH, BOB, value=10 * ICX),
            chain.icx(RICH, POOR.address, value=ICX),
            chain.icx(DUST, BOB, value=1),
        ),
        chain.next(
            chain.icx(BOB_KEY, SCORE_ADDRESS, value=ICX, data_type="call", data=kv_set("k", "v")),
            chain.icx(POOR, BOB, value=ICX, step_limit=100),
            chain.icx(BOB_KEY, OTHER_CX, data_type="call", data={"method": "m"}),
            chain.v1(kv_set("v1", "x")),
        ),
    ]
    codes = [
        [SUCCESS, SUCCESS, coin.OUT_OF_BALANCE],
        [SUCCESS, coin.OUT_OF_STEP, coin.CONTRACT_NOT_FOUND, SUCCESS],
    ]
    paid = 0
    for block, expected in zip(blocks, codes, strict=True):
        before = {a: held(score, a) for a in everyone}
        results, _, _ = execute(score, block)
        assert [r.code for r in results] == expected
        paid += sum(before.values()) - sum(held(score, a) for a in everyone)
        assert supply(score) == SUPPLY == holdings(score, *everyone)
    assert held(score, TREASURY) == paid > 0


# -- determinism


def _mixed_blocks(chain: CoinChain) -> list[Block]:
    return [
        chain.genesis_block(),
        chain.next(
            chain.icx(RICH, BOB, value=5 * ICX),
            chain.v1(kv_set("from-v1", "1")),
            chain.icx(RICH, SCORE_ADDRESS, value=ICX, data_type="call", data=kv_set("k", "v")),
        ),
        chain.next(
            chain.icx(POOR, BOB, value=ICX),
            chain.icx(RICH, SCORE_ADDRESS, data_type="call", data={"method": "nope"}),
            chain.icx(DUST, BOB, step_limit=10),
            chain.icx(BOB_KEY, OTHER_CX, data_type="call", data={"method": "m"}),
        ),
        chain.next(chain.icx(BOB_KEY, RICH.address, value=ICX, data_type="message", data="thanks")),
    ]


def test_two_independent_scores_reach_the_same_results_and_roots(open_scores: Any) -> None:
    blocks = _mixed_blocks(CoinChain())
    first, second = open_scores(name="first"), open_scores(name="second")
    outcomes = [[execute(score, block) for block in blocks] for score in (first, second)]
    assert outcomes[0] == outcomes[1]
    assert len({root for _, root, _ in outcomes[0]}) == len(blocks)  # every block changed it
    assert first.status() == second.status()


def test_a_different_fee_gives_a_different_root(open_scores: Any) -> None:
    chain_a, chain_b = CoinChain(), CoinChain()
    roots = []
    for name, chain, limit in (("a", chain_a, 200_000), ("b", chain_b, 99_999)):
        score = open_scores(name=name)
        execute(score, chain.genesis_block())
        _, root, results_hash = execute(score, chain.next(chain.icx(RICH, BOB, step_limit=limit)))
        roots.append((root, results_hash))
    assert roots[0][0] != roots[1][0] and roots[0][1] != roots[1][1]


async def test_the_real_score_process_reaches_the_roots_of_loaded_score(
    tmp_path: Path, open_scores: Any
) -> None:
    blocks = _mixed_blocks(CoinChain())
    in_process = open_scores(name="in_process")
    expected = [execute(in_process, block) for block in blocks]
    package = resolve_package(
        ROOT / "score",
        "sample/kvstore",
        branch="master",
        allow_develop=False,
        work_dir=tmp_path / "work",
    )
    async with running(make_supervisor(tmp_path, score_config(), package)) as supervisor:
        client = supervisor.client
        assert await client.balance(RICH.address) == (0, 0, -1)
        for block, (results, state_root, results_hash) in zip(blocks, expected, strict=True):
            staged = await client.invoke_block(block)
            assert staged.results == results  # the steps cross the wire
            assert (staged.state_root, staged.results_hash) == (state_root, results_hash)
            await client.commit_block(block.height, block.hash.hex())
        for address in (RICH.address, BOB, TREASURY, SCORE_ADDRESS, DUST.address):
            assert await client.balance(address) == (held(in_process, address), SUPPLY, 3)
        # concurrent asks share calls: the first goes alone, the others in full calls after it
        asked = [RICH.address, BOB, DUST.address] * 200
        calls = client.balance_calls
        answers = await asyncio.gather(*(client.balance(address) for address in asked))
        assert answers == [(held(in_process, a), SUPPLY, 3) for a in asked]
        assert client.balance_calls - calls == 1 + math.ceil(
            (len(asked) - 1) / MAX_BALANCE_ADDRESSES
        )
        # asked together: in full calls from the first (a v3 batch's senders at admission)
        calls = client.balance_calls
        assert await client.balances(asked) == answers
        assert client.balance_calls - calls == math.ceil(len(asked) / MAX_BALANCE_ADDRESSES)


def test_a_balance_call_is_bounded(open_scores: Any) -> None:
    score, _ = funded(open_scores)
    many = pb.BalanceRequest(addresses=[RICH.address] * (MAX_BALANCE_ADDRESSES + 1))
    with pytest.raises(Refused, match=f"limit {MAX_BALANCE_ADDRESSES}"):
        score.balance(many)
    some = pb.BalanceRequest(addresses=[RICH.address, BROKE.address])
    assert list(score.balance(some).balances) == [str(held(score, RICH.address)), "0"]


# -- reserved keys


def _keys_package(tmp_path: Path) -> Path:
    write_package(tmp_path / "repo", "keys", KEYS_SCORE)
    return tmp_path / "repo" / "test" / "keys"


@pytest.mark.parametrize(
    "key",
    [b"\x00icx:balance:" + RICH.address.encode(), b"\x00icx:supply", b"\x00", b"\x00anything"],
)
@pytest.mark.parametrize("method", ["write", "read", "delete"])
def test_score_code_may_not_touch_the_engines_keys(
    open_scores: Any, tmp_path: Path, key: bytes, method: str
) -> None:
    score, chain = funded(open_scores, _keys_package(tmp_path))
    data = {"method": method, "params": {"key": key.hex()}}
    v3 = chain.icx(RICH, SCORE_ADDRESS, value=ICX, data_type="call", data=data)
    v1 = chain.v1(data)
    results, _, _ = execute(score, chain.next(v3, v1))
    reason = "ValueError: state keys starting with a NUL byte are reserved for the engine"
    assert [(r.code, r.message) for r in results] == [
        (coin.REVERTED, reason),
        (SCORE_ERROR, reason),
    ]
    assert results[1].steps == 0
    fee = steps_for("call", data) * STEP_PRICE
    assert held(score, RICH.address) == 1000 * ICX - fee
    assert supply(score) == SUPPLY and held(score, SCORE_ADDRESS) == 0
    assert score.state.read_committed(b"seen") is None
    with pytest.raises(Refused, match="reserved for the engine") as info:
        score.query(key.hex())
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_score_code_may_use_keys_holding_a_nul_byte_after_the_first(
    open_scores: Any, tmp_path: Path
) -> None:
    score, chain = funded(open_scores, _keys_package(tmp_path))
    key = b"a\x00icx:supply"
    tx = chain.icx(
        RICH,
        SCORE_ADDRESS,
        data_type="call",
        data={"method": "write", "params": {"key": key.hex()}},
    )
    results, _, _ = execute(score, chain.next(tx))
    assert results[0].code == SUCCESS
    assert score.query(key.hex()) == repr(b"999999999999999999999999")
    assert supply(score) == SUPPLY


# -- v1 transactions


def _kv_package(tmp_path: Path) -> Path:
    """The helpers' op-driven KV SCORE (tests/integration/_score_helpers.py): it emits nothing
    and stores raw values, so what a v1 result hashes to is fixed by this test alone."""
    write_package(tmp_path / "repo", "kv", KV_SCORE)
    return tmp_path / "repo" / "test" / "kv"


def test_v1_results_and_roots_are_as_before_and_v1_senders_pay_nothing(
    open_scores: Any, tmp_path: Path
) -> None:
    score, chain = open_scores(_kv_package(tmp_path)), CoinChain()
    validator = chain.builder.signers[0]  # the v1 transactions' sender
    chain.genesis = ((RICH, ICX), (validator, 5 * ICX))
    execute(score, chain.genesis_block())
    prev_root = score.state.state_root
    txs = [
        chain.v1({"op": "set", "key": "a", "value": "1"}),
        chain.v1({"op": "set_then_fail", "key": "b"}),
        chain.v1({"op": "nonsense"}),
        chain.v1({"op": "set", "key": "c", "value": "3"}),
    ]
    results, state_root, results_hash = execute(score, chain.next(*txs))
    assert [(r.code, r.steps) for r in results] == [(0, 0), (SCORE_ERROR, 0), (1, 0), (0, 0)]
    # the JSON that is hashed has no "steps": the hash v1 results had before the coin
    encoded = [
        b'{"code":0,"message":"","tx_hash":"%s"}' % txs[0].hash_hex.encode(),
        b'{"code":9000,"message":"ScoreError: refused after writing","tx_hash":"%s"}'
        % txs[1].hash_hex.encode(),
        b'{"code":1,"message":"unknown op nonsense","tx_hash":"%s"}' % txs[2].hash_hex.encode(),
        b'{"code":0,"message":"","tx_hash":"%s"}' % txs[3].hash_hex.encode(),
    ]
    assert [canonical.encode(r.to_json()) for r in results] == encoded
    assert results_hash == merkle_root([sha3_256(raw) for raw in encoded])
    # the state root: the SCORE's writes alone, no balance moved, no fee
    assert state_root == next_state_root(prev_root, {b"a": b"1", b"c": b"3"})
    assert held(score, validator.address) == 5 * ICX and held(score, TREASURY) == 0
    assert supply(score) == 6 * ICX


def test_a_chain_without_genesis_accounts_has_the_roots_it_had_before_the_coin(
    open_scores: Any, tmp_path: Path
) -> None:
    score, chain = open_scores(_kv_package(tmp_path)), CoinChain(genesis=None)
    _, state_root, _ = execute(score, chain.genesis_block(update=False))
    root = next_state_root(EMPTY_ROOT, {})
    assert state_root == root
    for n in range(3):
        tx = chain.v1({"op": "set", "key": f"k{n}", "value": "v"})
        _, state_root, results_hash = execute(score, chain.next(tx))
        root = next_state_root(root, {f"k{n}".encode(): b"v"})
        assert state_root == root
        encoded = b'{"code":0,"message":"","tx_hash":"%s"}' % tx.hash_hex.encode()
        assert results_hash == merkle_root([sha3_256(encoded)])
    assert supply(score) == 0 and score.state.read_committed(SUPPLY_KEY) is None


# -- results in the block store


def test_the_block_store_records_steps_and_cumulative_steps(
    open_scores: Any, tmp_path: Path
) -> None:
    score, chain = open_scores(), CoinChain()
    kv = open_store(tmp_path / "blocks")
    store = BlockStore(kv, CHANNEL)
    try:
        txs = [
            chain.icx(RICH, BOB, value=1),
            chain.v1(kv_set("a", "1")),
            chain.icx(RICH, SCORE_ADDRESS, data_type="call", data=kv_set("b", "2")),
            chain.icx(BROKE, BOB, step_limit=100_000),
            chain.icx(RICH, BOB, step_limit=5),
        ]
        for block in (chain.genesis_block(), chain.next(*txs)):
            store.save_block(block, chain.builder.certify(block))
            results, state_root, results_hash = execute(score, block)
            store.save_results(block.height, results, state_root, results_hash)
        steps = [100_000, 0, steps_for("call", kv_set("b", "2")), 100_000, 5]
        cumulative = list(itertools.accumulate(steps))
        codes = [SUCCESS, SUCCESS, SUCCESS, coin.OUT_OF_BALANCE, coin.OUT_OF_STEP]
        for tx, code, used, total in zip(txs, codes, steps, cumulative, strict=True):
            recorded = store.tx_result(tx.hash)
            assert recorded is not None
            expected_total = total if used else 0  # a v1 transaction records neither
            assert (recorded.code, recorded.height) == (code, 1)
            assert (recorded.steps, recorded.cumulative_steps) == (used, expected_total)
        v1 = store.tx_result(txs[1].hash)
        assert v1 is not None and tuple(v1)[:5] == (SUCCESS, "", 1, 0, 0)
    finally:
        kv.close()


async def test_concurrent_balance_asks_all_hear_a_failed_call_and_the_next_ask_goes_out(
    tmp_path: Path,
) -> None:
    """No SCORE process listens on the socket: every ask sharing the failed call hears why, and
    the client is not left waiting on a call that never returns."""
    client = ScoreClient(tmp_path / "nobody.sock", score_config(SCORE_QUERY_TIMEOUT=5))
    try:
        asked = await asyncio.gather(
            *(client.balance(a) for a in (RICH.address, BOB, DUST.address)),
            return_exceptions=True,
        )
        assert all(isinstance(answer, ScoreUnavailable) for answer in asked), asked
        assert client.balance_calls == 2  # the first alone, the two after it together
        with pytest.raises(ScoreUnavailable, match="SCORE balance"):
            await client.balance(RICH.address)
        assert client.balance_calls == 3
    finally:
        await client.close()
