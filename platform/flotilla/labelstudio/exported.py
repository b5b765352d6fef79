"""Reading Label Studio's task export the one way both labelling loops need.

An active-learning round and a data review both take, per exported task, the newest annotation
that was not skipped, and both refuse the whole receive when any value cannot be stored (one
pass names every bad annotation; nothing is half-received). Kept here, below both loops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flotilla.errors import SpecError


def newest_annotation(task: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The task's latest annotation that was not skipped (by update time, then id); None if there is none."""
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not done:
        return None
    newest: Mapping[str, Any] = max(
        done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), int(a.get("id") or 0))
    )
    return newest


def refuse_problems(problems: Sequence[str], what: str, redo: str) -> None:
    """Raise one SpecError listing every annotation ``what`` could not use; ``redo`` names the retry."""
    if problems:
        raise SpecError(
            f"{len(problems)} {what}; nothing was received:",
            list(problems),
            hint=f"correct those annotations in Label Studio (or skip the tasks), then {redo}",
        )
