"""Active-learning rounds: select → label in Label Studio → gated append → warm-start retrain → promote only when better.

Each step is a function over hub state (a round is its branch ``al-<name>-round-<k>``, see
:mod:`~flotilla.active.rounds`): :func:`select_round` (:mod:`~flotilla.active.selecting`),
:func:`send_round` and :func:`receive_round` (Label Studio, :mod:`~flotilla.active.sending`,
:mod:`~flotilla.active.receiving`), :func:`retrain_round` (:mod:`~flotilla.active.retraining`, the rule
in :mod:`~flotilla.active.decision`). :func:`annotate_round` is the scripted annotator tests and the
demo use (:mod:`~flotilla.active.truth`). docs/active-learning.md tells the loop.
"""

from flotilla.active.decision import Comparison, Decision, decide
from flotilla.active.labelconfig import label_config, parse_annotations
from flotilla.active.loop import run_round, wait_for_labels
from flotilla.active.receiving import receive_round
from flotilla.active.retraining import retrain_round
from flotilla.active.rounds import RoundState, read_state, round_branch
from flotilla.active.selecting import select_round
from flotilla.active.sending import send_round
from flotilla.active.truth import annotate_round, synthetic_truth

__all__ = [
    "Comparison",
    "Decision",
    "RoundState",
    "annotate_round",
    "decide",
    "label_config",
    "parse_annotations",
    "read_state",
    "receive_round",
    "retrain_round",
    "round_branch",
    "run_round",
    "select_round",
    "send_round",
    "synthetic_truth",
    "wait_for_labels",
]
