#!/usr/bin/env python3
"""What checking one ICON v3 transaction costs, step by step (CPU microseconds per transaction).

    .venv/bin/python tools/bench_v3_verify.py [-n 2000] [--json]

Transfers signed like iconsdk signs them (a fresh account, nid 3, value and nonce), measured over
`-n` distinct transactions (so no memo of a good signature helps):
* parse: the params' shape and fields, and their hash (types/icon_tx.parse_send_params);
* recover: the public key recovered from the signature and compared with `from`;
* admit: both, as the receiving peer checks icx_sendTransaction (verify_send_params);
* decode: a stored v3 transaction read back from its canonical bytes (Transaction.decode, as every
  block that carries it is decoded: it re-checks the params and re-hashes them, but does not
  recover the signature again);
* sign: what a client spends signing one (make_params + sign_params), for comparison.
Figures vary ~3x between machines of one kind; compare them only within one run.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a file, by any python: go on in the repository's .venv
    import runpy
    from pathlib import Path

    runpy.run_path(str(Path(__file__).resolve().parent / "_venv.py"))["into_venv"](__file__)

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from loopchain.types.crypto import Signer
from loopchain.types.icon_tx import (
    make_params,
    parse_send_params,
    sign_params,
    verify_send_params,
)
from loopchain.types.transaction import Transaction


def _signed(count: int) -> list[dict[str, Any]]:
    sender, to = Signer.generate(), Signer.generate().address
    now = time.time_ns() // 1000
    return [
        sign_params(
            make_params(
                sender=sender.address,
                to=to,
                step_limit=100_000,
                timestamp_us=now + i,
                nid=3,
                value=10**18,
                nonce=i,
            ),
            sender,
        )
        for i in range(count)
    ]


def _per_item_us(work: Callable[[Any], Any], items: Sequence[Any]) -> float:
    started = time.process_time()
    for item in items:
        work(item)
    return round((time.process_time() - started) / len(items) * 1e6, 1)


def measure(count: int) -> dict[str, float]:
    """CPU µs per transaction of each step."""
    txs = _signed(count)
    stored = [Transaction.from_icon(verify_send_params(p)).encode() for p in _signed(count)]
    fresh = _signed(count)
    sender = Signer.generate()
    parsed = [parse_send_params(p) for p in txs]
    figures = {
        "parse_us": _per_item_us(parse_send_params, txs),
        "recover_us": _per_item_us(lambda tx: tx.verify_signature(), parsed),
        "admit_us": _per_item_us(verify_send_params, fresh),
        "decode_us": _per_item_us(Transaction.decode, stored),
    }
    figures["sign_us"] = _per_item_us(
        lambda i: sign_params(
            make_params(sender=sender.address, to=sender.address, step_limit=1, timestamp_us=i),
            sender,
        ),
        range(count),
    )
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_v3_verify.py", description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="transactions per step (default 2000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.n <= 0:
        parser.error("-n must be positive")
    figures = measure(args.n)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:<12} {value:>8.1f} µs per transaction")
    return 0


if __name__ == "__main__":
    sys.exit(main())
