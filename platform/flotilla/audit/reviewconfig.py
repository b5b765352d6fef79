"""A review as Label Studio speaks it: the labelling config, one task per flagged sample, and the decisions back.

Each task shows the image, what the audit flagged, the current labels and the model's suggestion,
and asks for one **decision**: ``keep`` (the labels are right), ``accept`` (the suggestion is),
``set`` (a label the reviewer gives, per task: the class names, or a number) or ``remove`` (with a
reason: not a face, duplicate, other). The suggestion is also a pre-annotation: ``accept`` with the
suggested values filled in (``remove``/``duplicate`` for a flagged duplicate), ``score`` = the row's
worst score, so Label Studio's uncertainty sampling serves the likeliest problem first.

Decisions come back checked as strictly as a label fix: a ``remove`` without a reason, a ``set``
with no value, an ``accept`` where nothing was suggested are named, all at once, and nothing is
received. Control names are fixed (``decision``, ``reason``) or the column's (``set_<column>``).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from xml.sax.saxutils import quoteattr

from flotilla.audit.reviewrows import FlaggedRow, ReviewTask
from flotilla.labelstudio.exported import newest_annotation, refuse_problems

IMAGE = "image"
DECISION = "decision"
REASON = "reason"
DECISIONS = ("keep", "accept", "set", "remove")
REASONS = ("not a face", "duplicate", "other")
Action = Literal["keep", "accept", "set", "remove"]


def set_name(task: ReviewTask) -> str:
    return f"set_{task.column}"


def label_config(tasks: Sequence[ReviewTask]) -> str:
    """Label Studio's XML config of a review: image, the row's story, the decision, a reason, a value per task."""

    def choices(name: str, values: Sequence[str], extra: str = "") -> list[str]:
        head = f'  <Choices name={quoteattr(name)} toName="{IMAGE}" choice="single" showInline="true"{extra}>'
        return [head, *(f"    <Choice value={quoteattr(v)}/>" for v in values), "  </Choices>"]

    def when(value: str) -> str:
        return f'visibleWhen="choice-selected" whenTagName="{DECISION}" whenChoiceValue="{value}"'

    parts = [
        "<View>",
        f'  <Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>',
        '  <Text name="flags" value="$flags"/>',
        '  <Text name="current" value="$current"/>',
        '  <Text name="suggestion" value="$suggestion"/>',
        '  <Header value="keep the labels, accept the suggestion, set a label, or remove the sample"/>',
        *choices(DECISION, DECISIONS, ' required="true"'),
        f"  <View {when('remove')}>",
        '  <Header value="why remove it"/>',
        *choices(REASON, REASONS),
        "  </View>",
        f"  <View {when('set')}>",
    ]
    for t in tasks:
        parts.append(f"  <Header value={quoteattr(t.column)}/>")
        if t.categorical:
            parts += choices(set_name(t), t.classes)
        else:
            bounds = "".join(f' {k}="{v:g}"' for k, v in (("min", t.low), ("max", t.high)) if abs(v) != float("inf"))
            parts.append(f'  <Number name={quoteattr(set_name(t))} toName="{IMAGE}"{bounds}/>')
    parts += ["  </View>", "</View>"]
    return "\n".join(parts) + "\n"


def _item(name: str, kind: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"from_name": name, "to_name": IMAGE, "type": kind, "value": value}


def value_item(task: ReviewTask, value: float) -> dict[str, Any]:
    """The result item that sets ``task`` to ``value`` (a class index, or a number)."""
    if task.categorical:
        return _item(set_name(task), "choices", {"choices": [task.classes[int(value)]]})
    return _item(set_name(task), "number", {"number": round(float(value), 1)})


def decision_items(action: Action, *, reason: str = "", values: Mapping[ReviewTask, float] | None = None) -> list[dict[str, Any]]:
    """Result items for one decision: what the review UI submits (and the scripted reviewer too)."""
    items = [_item(DECISION, "choices", {"choices": [action]})]
    if reason:
        items.append(_item(REASON, "choices", {"choices": [reason]}))
    items += [value_item(t, v) for t, v in (values or {}).items()]
    return items


def describe(row: FlaggedRow, tasks: Sequence[ReviewTask]) -> dict[str, str]:
    """The texts a task shows: the flags, the current labels, the model's suggestion."""
    by = {t.column: t for t in tasks}
    flags = ", ".join(row.issues) + f" (worst score {row.worst_score:.3f})"
    if row.duplicate_of:
        flags += f"; duplicate of {row.duplicate_of}"
    current = " · ".join(f"{t.column}: {t.show(row.given.get(t.column))}" for t in tasks)
    suggestion = " · ".join(f"{c}: {by[c].show(v)}" for c, v in row.suggested.items() if c in by and v is not None)
    return {
        "flags": f"flagged: {flags}",
        "current": f"current: {current}",
        "suggestion": f"model suggests: {suggestion}" if suggestion else "model suggests: no label change",
    }


def task_payload(row: FlaggedRow, tasks: Sequence[ReviewTask], image_url: str, *, model_version: str) -> dict[str, Any]:
    """One Label Studio task for ``row``: its data, and the suggestion as a pre-annotation when there is one."""
    payload: dict[str, Any] = {
        "data": {IMAGE: image_url, "sample_id": row.sample_id, **describe(row, tasks)},
        "meta": {"flotilla_review": model_version},
    }
    values = {t: v for t in tasks if (v := row.suggested.get(t.column)) is not None}
    if values:
        items = decision_items("accept", values=values)
    elif row.duplicate:
        items = decision_items("remove", reason="duplicate")
    else:
        return payload
    payload["predictions"] = [{"model_version": model_version, "score": row.worst_score, "result": items}]
    return payload


@dataclass(frozen=True)
class Decision:
    """What a reviewer decided for one sample; ``labels``: the label changes it implies ({column: stored value}:
    a class index for a categorical column, a number for a continuous one)."""

    sample_id: str
    action: Action
    labels: Mapping[str, float] = field(default_factory=dict)
    reason: str = ""
    reviewer: str = ""


@dataclass(frozen=True)
class ParsedReview:
    decisions: dict[str, Decision]
    problems: tuple[str, ...]


def _reviewer(annotation: Mapping[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, Mapping):
        return str(who.get("email") or who.get("id") or "")
    return "" if who is None else f"user {who}"


def _decide(row: FlaggedRow, tasks: Sequence[ReviewTask], result: Sequence[Mapping[str, Any]], who: str) -> Decision | str:
    by_name = {set_name(t): t for t in tasks}
    picked: dict[str, list[Any]] = {}
    values: dict[str, float] = {}
    for item in result:
        name, value = str(item.get("from_name")), item.get("value") or {}
        if name in (DECISION, REASON):
            picked[name] = list(value.get("choices") or [])
        elif (t := by_name.get(name)) is not None:
            if t.categorical:
                got = value.get("choices") or []
                if len(got) != 1 or got[0] not in t.classes:
                    return f"{t.column} {got!r} is not one of {', '.join(t.classes)}"
                values[t.column] = t.classes.index(got[0])
            else:
                raw = value.get("number")
                if not isinstance(raw, numbers.Real) or isinstance(raw, bool) or not t.low <= float(raw) <= t.high:
                    return f"{t.column} {raw!r} is not a number in {t.low:g}..{t.high:g}"
                values[t.column] = float(raw)
    action = (picked.get(DECISION) or [None])[0]
    if action not in DECISIONS:
        return f"no decision (one of {', '.join(DECISIONS)})"
    if action == "remove":
        reason = (picked.get(REASON) or [""])[0]
        if reason not in REASONS:
            return f"a removal needs a reason ({', '.join(REASONS)})"
        return Decision(row.sample_id, "remove", reason=reason, reviewer=who)
    if action == "accept":
        categorical = {t.column for t in tasks if t.categorical}
        suggested = {c: (int(v) if c in categorical else v) for c, v in row.suggested.items() if v is not None}
        if not suggested:
            return "'accept' but the model suggested no label change for it"
        return Decision(row.sample_id, "accept", suggested, reviewer=who)
    if action == "set":
        if not values:
            return "'set' but no label value was given"
        return Decision(row.sample_id, "set", values, reviewer=who)
    return Decision(row.sample_id, "keep", reviewer=who)


def parse_review(
    tasks: Sequence[ReviewTask], rows: Mapping[str, FlaggedRow], exported: Sequence[Mapping[str, Any]]
) -> ParsedReview:
    """Label Studio's export → a decision per reviewed sample (its newest non-skipped annotation); every problem named.

    A task without an annotation, or only skipped ones, has no decision (the caller reports it as
    unreviewed); a task of a sample the review did not send is ignored.
    """
    decisions: dict[str, Decision] = {}
    problems: list[str] = []
    for task in exported:
        sid = str((task.get("data") or {}).get("sample_id") or "")
        newest = newest_annotation(task)
        if sid not in rows or newest is None:
            continue
        got = _decide(rows[sid], tasks, newest.get("result") or [], _reviewer(newest))
        if isinstance(got, str):
            problems.append(f"task {task.get('id')} (sample {sid}): {got}")
        else:
            decisions[sid] = got
    return ParsedReview(decisions, tuple(problems))


def require_valid(parsed: ParsedReview) -> ParsedReview:
    refuse_problems(parsed.problems, "review decision(s) cannot be applied", "receive the review again")
    return parsed


@dataclass(frozen=True)
class Changes:
    """The decisions as data changes: label values per sample, removals with their reasons."""

    relabels: dict[str, dict[str, float]]
    removals: dict[str, str]
    kept: tuple[str, ...]
    reviewers: tuple[str, ...]


def to_changes(decisions: Mapping[str, Decision]) -> Changes:
    relabels = {s: dict(d.labels) for s, d in decisions.items() if d.action in ("accept", "set")}
    removals = {s: d.reason for s, d in decisions.items() if d.action == "remove"}
    kept = tuple(s for s, d in decisions.items() if d.action == "keep")
    return Changes(relabels, removals, kept, tuple(sorted({d.reviewer for d in decisions.values() if d.reviewer})))
