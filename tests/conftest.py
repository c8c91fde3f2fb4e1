"""Suite-wide set-up.

iconsdk (a development requirement, used by the JSON-RPC v3 tests) imports py_ecc, which raises the
interpreter's recursion limit to 100,000 at import. In the one pytest process that runs every test,
a later parse of deeply nested JSON (a test that checks such input is refused) then overflows the C
stack, a segfault, instead of raising RecursionError as in every node process, which never imports
it. So it is imported once here, first, and the limit put back.

Hypothesis fails an example that takes longer than its deadline (200 ms by default): a property
test must not depend on the machine's speed (a loaded 2-core machine stalls a process for longer
at times), so no test has one unless it says so.
"""

from __future__ import annotations

import sys

_LIMIT = sys.getrecursionlimit()
try:
    import py_ecc  # noqa: F401  (what iconsdk imports; it sets the limit when first imported)
except ImportError:  # pragma: no cover - iconsdk is in requirements.txt
    pass
sys.setrecursionlimit(_LIMIT)

from hypothesis import settings  # noqa: E402  (after the limit is put back)

settings.register_profile("loopchain", deadline=None)
settings.load_profile("loopchain")
