"""The model-based data audit: label issues, outliers, near-duplicates and weak slices, reviewed in Label Studio.

:func:`audit_dataset` (:mod:`~flotilla.audit.auditing`) audits a dataset at a commit with a
trained model and commits the findings on an ``audit-*`` branch; :func:`find_issues`
(:mod:`~flotilla.audit.arrays`) is the same audit on plain arrays, and :func:`detect_issues`
(:mod:`~flotilla.audit.issues`) its core once the out-of-sample outputs are made. Out-of-sample outputs come
from a cross-validated linear probe on the frozen embeddings (:mod:`~flotilla.audit.probe`) or the
model itself on unseen data (:mod:`~flotilla.audit.inputs`); one kNN graph (:mod:`~flotilla.audit.knn`)
serves every check; :mod:`~flotilla.audit.table` writes the findings table. The review loop
(``review*`` modules) sends an audit's flagged samples to Label Studio and brings the decisions back.

The findings' format (where they live, their table) is :mod:`flotilla.data.findings`, so that the
data report can read them without this package. docs/data.md tells the audit and its review loop.
"""

from flotilla.audit.arrays import find_issues
from flotilla.audit.auditing import AuditPlan, AuditResult, audit_dataset, new_audit_id, plan_audit
from flotilla.audit.inputs import METHODS, check_method, task_inputs
from flotilla.audit.issues import Issues, TaskInput, TaskIssues, detect_issues, output_quality, weak_outputs
from flotilla.audit.knn import exact_duplicates, knn_graph
from flotilla.audit.probe import probe_probabilities, probe_values
from flotilla.audit.reviewer import annotate_review, scripted_review
from flotilla.audit.reviewing import ReviewResult, receive_review, review_status, send_review
from flotilla.audit.reviewrows import FlaggedRow, ReviewTask, flagged_rows
from flotilla.audit.reviewstate import ReviewState, resolve_audit
from flotilla.audit.table import findings_table, row_flags

__all__: list[str] = [
    "METHODS",
    "AuditPlan",
    "AuditResult",
    "FlaggedRow",
    "Issues",
    "ReviewResult",
    "ReviewState",
    "ReviewTask",
    "TaskInput",
    "TaskIssues",
    "annotate_review",
    "audit_dataset",
    "check_method",
    "detect_issues",
    "exact_duplicates",
    "find_issues",
    "findings_table",
    "flagged_rows",
    "knn_graph",
    "new_audit_id",
    "output_quality",
    "plan_audit",
    "probe_probabilities",
    "probe_values",
    "receive_review",
    "resolve_audit",
    "review_status",
    "row_flags",
    "scripted_review",
    "send_review",
    "task_inputs",
    "weak_outputs",
]
