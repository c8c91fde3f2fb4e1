"""The file descriptors a process may open: its soft limit (RLIMIT_NOFILE) raised as far as its
servers need, up to the hard one, as servers do. Each server then bounds its connections by what
that leaves (see http_site.connection_cap and grpc_util.connections_a_port)."""

from __future__ import annotations

import resource


def raise_soft_limit(wanted: int) -> int | None:
    """Raise this process's soft descriptor limit to `wanted` when it is lower (up to the hard
    limit; never lowered). The soft limit then; None when there is none."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    if soft < wanted and (hard == resource.RLIM_INFINITY or soft < hard):
        target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft
