"""The model-based data audit: label issues, outliers, near-duplicates and weak slices, reviewed in Label Studio.

The findings' format (where they live, their table) is :mod:`flotilla.data.findings`, so that the
data report can read them without this package. docs/data.md tells the audit and its review loop.
"""

from flotilla.audit.reviewer import annotate_review, scripted_review
from flotilla.audit.reviewing import ReviewResult, receive_review, review_status, send_review
from flotilla.audit.reviewrows import FlaggedRow, ReviewTask, flagged_rows
from flotilla.audit.reviewstate import ReviewState, resolve_audit

__all__: list[str] = [
    # the review loop
    "FlaggedRow",
    "ReviewResult",
    "ReviewState",
    "ReviewTask",
    "annotate_review",
    "flagged_rows",
    "receive_review",
    "resolve_audit",
    "review_status",
    "scripted_review",
    "send_review",
]
