"""The connection bound of the REST ports: what a process may open lowers it."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

from loopchain import http_site

CAP_UNDER_LIMITS = """
import json, resource, sys
from loopchain import http_site
resource.setrlimit(resource.RLIMIT_NOFILE, (300, 500))
caps = [http_site.connection_cap(n) for n in (4096, 100, 1)]
print(json.dumps({"caps": caps, "limits": resource.getrlimit(resource.RLIMIT_NOFILE)}))
"""


def test_the_bound_leaves_descriptors_for_everything_else() -> None:
    """In a process that may open 500 descriptors (soft limit 300), 4,096 configured connections
    become 500 less the reserve and the lingering refusals, the soft limit raised to the hard one; a bound within the limit
    is kept. (In a child process: a hard limit, once lowered, cannot be raised again.)"""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 500:
        pytest.skip(f"this process may open only {hard} descriptors")
    done = subprocess.run(
        [sys.executable, "-c", CAP_UNDER_LIMITS], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    others = http_site.RESERVED_FDS + http_site.LINGERING_REFUSALS_MAX
    assert result["caps"] == [500 - others, 100, 1]
    assert result["limits"] == [500, 500]
    assert f"at most {500 - others} REST connections (REST_MAX_CONNECTIONS is 4096)" in done.stderr


def test_the_refusal_is_a_complete_http_answer() -> None:
    raw = http_site.refusal_response(b'{"message":"x"}')
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1" in head
    assert b"\r\nContent-Length: 15" in head and b"\r\nConnection: close" in head
    assert body == b'{"message":"x"}'
