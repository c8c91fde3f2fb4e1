"""The rule for SCORE package names: '<org>/<package>', each part letters, digits, '_', '.' or '-'
starting with a letter or digit (never '..', never an absolute path). A name picks the folder,
zip or git repository under DEFAULT_SCORE_REPOSITORY_PATH a peer loads the package from; the
RadioStation refuses a channel whose package no peer could load, the peer a name that is not one."""

from __future__ import annotations

import re
from typing import TypeGuard

MAX_PACKAGE_NAME = 200
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
PACKAGE_NAME = re.compile(f"({_SEGMENT})/({_SEGMENT})")
RULE = (
    "'<org>/<package>' (letters, digits, '_', '.', '-', each part starting with a letter or "
    f"digit, at most {MAX_PACKAGE_NAME} characters; e.g. 'loopchain/default')"
)


def is_package_name(name: object) -> TypeGuard[str]:
    """Whether `name` is a string that follows the rule."""
    return (
        isinstance(name, str)
        and len(name) <= MAX_PACKAGE_NAME
        and PACKAGE_NAME.fullmatch(name) is not None
    )
