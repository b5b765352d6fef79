"""Training one model family with Ray Train (DDP or DeepSpeed), each model on its own hub branch.

``flotilla.train(spec)`` is :func:`flotilla.training.run.train`; the package is named ``training``
so that the function and the package never share a name (a package named ``train`` replaced the
function as soon as one of its modules was imported).
"""

from flotilla.training.run import ModelResult, TrainResult, train

__all__ = ["ModelResult", "TrainResult", "train"]
