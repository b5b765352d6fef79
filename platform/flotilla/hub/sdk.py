"""The lakeFS SDK, imported on first use.

Importing ``lakefs`` (its generated API models) takes seconds on a small machine; the CLI, spec
validation and ``import flotilla`` must not pay for it, only a hub that is actually called.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any


def lakefs() -> ModuleType:
    import lakefs as sdk

    _own_storage_config_per_server()
    return sdk


def _own_storage_config_per_server() -> None:
    """Give each server's configuration its own storage config (a bug of lakefs 0.16, fixed here).

    ``lakefs.client.ServerConfiguration._storage_conf`` is a class attribute, one dict for the whole
    process, that each instance fills: the last server asked answers for every client. With two hubs in
    one process (an S3 one with presigned URLs, a local one) the local hub's uploads went the presigned
    way ("local adapter presigned URL operation not supported") and ``ensure_repo`` saw S3. Each
    instance gets a dict of its own before it fills it.
    """
    from lakefs.client import ServerConfiguration

    if getattr(ServerConfiguration, "_flotilla_own_dict", False):
        return
    original = ServerConfiguration.__init__

    def init(self: ServerConfiguration, client: Any) -> None:
        self._storage_conf = {}
        original(self, client)

    ServerConfiguration.__init__ = init  # type: ignore[method-assign]
    ServerConfiguration._flotilla_own_dict = True  # type: ignore[attr-defined]


def lakefs_exceptions() -> ModuleType:
    import lakefs.exceptions as lex

    return lex
