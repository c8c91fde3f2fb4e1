"""The bytes of a server's replies made and not yet sent.

gRPC keeps a reply until its caller has read it, after the handler is done with it: a caller that
reads nothing (its flow-control window 0) kept every reply it asked for, ~32 MiB a block range,
for as long as its connection lasted. A reply is counted from when it is made until its call is
done (sent, cancelled, or its connection gone); past the bounds, large replies are refused.
"""

from __future__ import annotations

from collections import Counter

# the replies to callers that hold none may take this many times `limit` in all, no more: each
# such reply went whatever the others held, and 512 callers each holding one unread range reply
# of 16 MiB held 8 GiB (review)
CEILING_TIMES_LIMIT = 4


class UnsentReplies:
    """Bytes of replies not yet sent, at most `limit` in all and `per_caller` to one caller (a
    source: grpc_util.call_source); a reply to a caller that holds none goes up to a ceiling of
    CEILING_TIMES_LIMIT x `limit`, so that callers holding the whole budget (their replies
    unread for as long as their connections last) do not keep others from theirs, as far as
    memory allows."""

    def __init__(self, limit: int, per_caller: int) -> None:
        self.limit = limit
        self.per_caller = per_caller
        self.ceiling = CEILING_TIMES_LIMIT * limit
        self.held = 0
        self._by_caller: Counter[str] = Counter()

    def take(self, caller: str, size: int) -> str | None:
        """Count a reply of `size` bytes to `caller` as held; or, when it would exceed a bound,
        why it is refused (nothing counted)."""
        if self.held + size > self.ceiling:
            return (
                f"replies of {self.held} bytes are not read yet by their callers; one of "
                f"{size} bytes more would pass the ceiling of {self.ceiling}"
            )
        if self._by_caller[caller]:
            if self._by_caller[caller] + size > self.per_caller:
                return (
                    f"replies of {self._by_caller[caller]} bytes to this caller are not read yet; "
                    f"one of {size} bytes more would pass the limit of {self.per_caller}"
                )
            if self.held + size > self.limit:
                return (
                    f"replies of {self.held} bytes are not read yet by their callers; one of "
                    f"{size} bytes more would pass the limit of {self.limit}"
                )
        self.held += size
        self._by_caller[caller] += size
        return None

    def give_back(self, caller: str, size: int) -> None:
        """A reply `take` counted is sent (or never will be)."""
        self.held -= size
        self._by_caller[caller] -= size
        if self._by_caller[caller] <= 0:
            del self._by_caller[caller]
