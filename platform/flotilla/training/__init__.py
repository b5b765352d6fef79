"""Training one model family with Ray Train (DDP or DeepSpeed), each model on its own hub branch.

``flotilla.train(spec)`` is :func:`flotilla.training.run.train`; the package is named ``training``
so that the function and the package never share a name (a package named ``train`` replaced the
function as soon as one of its modules was imported). :func:`train_model` fits one model described
by a :class:`ModelRun`: ``train`` calls it for each model of a family, a sweep for each trial.
:class:`WorkerHook` is the extension point that runs inside the workers.
"""

from flotilla.training.config import CheckpointRank, ModelRun, WorkerConfig
from flotilla.training.hooks import EpochStart, WorkerHook
from flotilla.training.publish import ModelResult, best_checkpoint, merge_family
from flotilla.training.run import TrainResult, train, train_model

__all__ = [
    "CheckpointRank",
    "EpochStart",
    "ModelResult",
    "ModelRun",
    "TrainResult",
    "WorkerConfig",
    "WorkerHook",
    "best_checkpoint",
    "merge_family",
    "train",
    "train_model",
]
