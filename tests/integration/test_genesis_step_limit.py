"""A channel's genesis data may state its SCORE step limit (`score_step_limit`): every peer's SCORE
then stops a transaction at that limit, whatever the peer's own SCORE_STEP_LIMIT says. The limit
decides results (9000 past it), so one peer's setting apart from the others' split their votes;
stated in the genesis, the chain itself carries the one value, and the SCORE takes it from the
genesis block it executes (a review: taken from the RadioStation's newest set when the process
started, a peer starting from an empty chain replayed it under a limit stated later).

Real parts: a lone validator's ChannelService over the in-memory transport with a LevelDB block
store, its SCORE runtime and a real SCORE process running a package written here; and the SCORE
process's LoadedScore over real LevelDB state, opened again as a restarted process opens it."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from loopchain.blockchain.block_store import BlockStore, StoredResult
from loopchain.blockchain.execution import SCORE_ERROR, SUCCESS
from loopchain.configure import load_config
from loopchain.consensus import messages as m
from loopchain.p2p.memory import InMemoryNetwork
from loopchain.peer.channel_service import ChannelService, ChannelSettings
from loopchain.protos import score_pb2 as pb
from loopchain.scoreservice.process import STEP_LIMIT_KEY, LoadedScore
from loopchain.scoreservice.state import USER_PREFIX
from loopchain.storage.abc import StorageCorrupt
from loopchain.storage.leveldb import LevelDBStore
from loopchain.types.crypto import Signer
from loopchain.types.genesis import GenesisData
from loopchain.types.peer import PeerInfo
from loopchain.types.validators import Validator, ValidatorSet
from tests.integration._score_helpers import write_package
from tests.integration.test_score_coin import CoinChain, execute
from tools.procs import wait_until_async

CHANNEL = "step_channel"
DEADLINE = 120.0  # a SCORE process starts in seconds; a slow machine has plenty
OWN_LIMIT = 1_000_000  # this peer's SCORE_STEP_LIMIT
STATED_LIMIT = 5_000  # the channel's, in its genesis data
# its constructor runs ~4 x STATED_LIMIT steps: under the peer's own limit, whatever the chain's
LOOP = """
from loopchain.blockchain.score_base import ScoreBase


class UserScore(ScoreBase):
    def __init__(self, context):
        super().__init__(context)
        i = 0
        while i < 10_000:
            i += 1

    def invoke(self, transaction, block):
        i = 0
        while i < transaction.data["n"]:
            i += 1
        return {"code": 0, "message": ""}
"""


async def _results(tmp_path: Path, genesis: GenesisData) -> tuple[StoredResult, StoredResult]:
    """The results of a short and a long loop executed by a lone validator whose channel's
    genesis is `genesis`; the service's SCORE step limit is checked on the way."""
    write_package(tmp_path / "score", "loop", LOOP)
    config = load_config(
        environ={},
        overrides={
            "DEFAULT_SCORE_REPOSITORY_PATH": str(tmp_path / "score"),
            "INTERVAL_BLOCKGENERATION": 0.05,
            "SCORE_STEP_LIMIT": OWN_LIMIT,
        },
    )
    issuer, signer = Signer.generate(), Signer.generate()
    validators = ValidatorSet(
        CHANNEL, 1, (Validator(signer.address),), genesis=genesis.encoded()
    ).signed_by(issuer)
    kv = LevelDBStore(tmp_path / "blocks")
    store = BlockStore(kv, CHANNEL)
    network = InMemoryNetwork()
    service = ChannelService(
        settings=ChannelSettings(
            CHANNEL, "test/loop", issuer.address, "memory:0", tmp_path / "channel", 0
        ),
        config=config,
        signer=signer,
        store=store,
        transport=network.transport(signer.address),
    )
    network.backends[signer.address] = service
    service.set_members([PeerInfo(signer.address, "memory:0", 0)])
    task = asyncio.create_task(service.run())
    service.receive(m.ValidatorsChanged(validators))
    try:
        outcomes = await service.create_txs([{"n": 10}, {"n": 2 * STATED_LIMIT}])
        hashes = [o.hash for o in outcomes if not isinstance(o, Exception)]
        assert len(hashes) == 2, outcomes

        async def recorded() -> list[StoredResult] | None:
            results = [store.tx_result(h) for h in hashes]
            return [r for r in results if r is not None] if all(results) else None

        short, long = await wait_until_async(recorded, DEADLINE, "both results recorded")
        return short, long
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        kv.close()


@pytest.mark.timeout(300)
async def test_the_step_limit_the_genesis_states_is_the_channels_over_the_peers_own(
    tmp_path: Path,
) -> None:
    short, long = await _results(tmp_path, GenesisData((), score_step_limit=STATED_LIMIT))
    assert short.code == SUCCESS, short
    assert long.code == SCORE_ERROR and "step limit" in long.message, long


@pytest.mark.timeout(300)
async def test_without_a_stated_step_limit_the_peers_own_applies(tmp_path: Path) -> None:
    short, long = await _results(tmp_path, GenesisData(()))
    assert (short.code, long.code) == (SUCCESS, SUCCESS), (short, long)


def _loop_request(tmp_path: Path) -> pb.LoadRequest:
    """What the peer asks a SCORE process to load: the LOOP package written in `tmp_path`, its
    state there."""
    write_package(tmp_path / "score", "loop", LOOP)
    return pb.LoadRequest(
        channel=CHANNEL,
        package_path=str(tmp_path / "score" / "test" / "loop"),
        state_path=str(tmp_path / "state"),
    )


@pytest.mark.parametrize("stated", [STATED_LIMIT, None])
def test_the_score_runs_under_its_genesis_blocks_limit_after_a_restart_too(
    tmp_path: Path, stated: int | None
) -> None:
    """The SCORE executing the genesis block takes the limit it states (kept in the state, an
    engine key): its transactions run under it whatever the process's own limit, and so do
    those of a process started again with another own limit, whose load and constructor still
    run under its own (under the chain's after a restart only, a package whose loading costs
    more than the chain's limit loaded fresh and failed started again: review). A genesis
    stating none leaves each process its own."""
    request = _loop_request(tmp_path)
    chain = CoinChain(genesis=(), score_step_limit=stated)
    loaded = LoadedScore(request, OWN_LIMIT)
    try:
        execute(loaded, chain.genesis_block())
        (result,), _, _ = execute(loaded, chain.next(chain.v1({"n": 2 * STATED_LIMIT})))
    finally:
        loaded.state.store.close()
    again = LoadedScore(request, 10 * STATED_LIMIT)  # started again, another own limit
    try:
        (after,), _, _ = again.invoke_block(chain.next(chain.v1({"n": 2 * STATED_LIMIT})))
    finally:
        again.state.store.close()
    if stated is None:  # each process its own: 1,000,000, then 50,000
        assert (result.code, after.code) == (SUCCESS, SUCCESS), (result, after)
    else:
        for each in (result, after):
            assert each.code == SCORE_ERROR and "step limit" in each.message, each


def test_a_damaged_step_limit_in_the_state_is_a_corrupt_store(tmp_path: Path) -> None:
    """The chain's step limit read back from the state and not a number is the state store's
    damage (StorageCorrupt: the store is moved aside and replayed from the chain), not a limit
    of some other value."""
    request = _loop_request(tmp_path)
    chain = CoinChain(genesis=(), score_step_limit=STATED_LIMIT)
    loaded = LoadedScore(request, OWN_LIMIT)
    try:
        execute(loaded, chain.genesis_block())
        loaded.state.store.put(USER_PREFIX + STEP_LIMIT_KEY, b"5e3", sync=True)
    finally:
        loaded.state.store.close()
    with pytest.raises(StorageCorrupt, match="step limit is damaged"):
        LoadedScore(request, OWN_LIMIT)
