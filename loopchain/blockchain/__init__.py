"""Chain logic: the block store, transaction pool and block validation (pure, no I/O frameworks).

Also home of the SCORE author API: users' SCOREs write `from loopchain.blockchain import ScoreBase`
as in the original loopchain (see `loopchain.blockchain.score_base`).
"""

from loopchain.blockchain.score_base import ScoreBase

__all__ = ["ScoreBase"]
