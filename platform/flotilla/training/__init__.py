"""Training one model family with Ray Train (DDP or DeepSpeed), each model on its own hub branch.

``flotilla.train(spec)`` is :func:`flotilla.training.run.train`; the package is named ``training``
so that the function and the package never share a name (a package named ``train`` replaced the
function as soon as one of its modules was imported). :func:`train_model` fits one model described
by a :class:`ModelRun`: ``train`` calls it for each model of a family, a sweep for each trial.
:func:`resume` continues a run whose driver was killed, from its last committed checkpoints.
:class:`WorkerHook` is the extension point that runs inside the workers. :func:`reproduce` trains a
published model again from its card and compares the metrics.
"""

from flotilla.training.config import CheckpointRank, ModelRun, WorkerConfig
from flotilla.training.hooks import EpochStart, WorkerHook
from flotilla.training.publish import ModelResult, best_checkpoint, merge_family
from flotilla.training.reproduction import MetricCheck, ReproduceReport, reproduce
from flotilla.training.resuming import resume
from flotilla.training.run import TrainResult, train, train_model

__all__ = [
    "CheckpointRank",
    "EpochStart",
    "MetricCheck",
    "ModelResult",
    "ModelRun",
    "ReproduceReport",
    "TrainResult",
    "WorkerConfig",
    "WorkerHook",
    "best_checkpoint",
    "merge_family",
    "reproduce",
    "resume",
    "train",
    "train_model",
]
