"""The lakeFS SDK, imported on first use.

Importing ``lakefs`` (its generated API models) takes seconds on a small machine; the CLI, spec
validation and ``import flotilla`` must not pay for it, only a hub that is actually called.
"""

from __future__ import annotations

from types import ModuleType


def lakefs() -> ModuleType:
    import lakefs as sdk

    return sdk


def lakefs_exceptions() -> ModuleType:
    import lakefs.exceptions as lex

    return lex
