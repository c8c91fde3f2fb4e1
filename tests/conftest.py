"""Suite-wide set-up.

iconsdk (a development requirement, used by the JSON-RPC v3 tests) imports py_ecc, which raises the
interpreter's recursion limit to 100,000 at import. In the one pytest process that runs every test,
a later parse of deeply nested JSON (a test that checks such input is refused) then overflows the C
stack, a segfault, instead of raising RecursionError as in every node process, which never imports
it. So it is imported once here, first, and the limit put back.
"""

from __future__ import annotations

import sys

_LIMIT = sys.getrecursionlimit()
try:
    import py_ecc  # noqa: F401  (what iconsdk imports; it sets the limit when first imported)
except ImportError:  # pragma: no cover - iconsdk is in requirements.txt
    pass
sys.setrecursionlimit(_LIMIT)
