"""One writer at a time on a branch that several models of this process share.

A separate family's sweep trial trains its per-task models side by side on the trial's one branch
(:mod:`flotilla.tune.separate`). lakeFS commits whatever is staged on a branch: two models writing
and committing at once would each commit the other's half-written files (the second then has
"no changes"), and two concurrent commits of one branch fail outright ("predicate failed"). So each
put-then-commit on a branch holds that branch's lock; on a branch of its own a model never waits.
"""

from __future__ import annotations

import threading
from collections import defaultdict

_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
_guard = threading.Lock()


def branch_lock(repo: str, branch: str) -> threading.Lock:
    """The lock of ``branch`` in ``repo`` in this process (the same object for every caller)."""
    with _guard:
        return _locks[(repo, branch)]
