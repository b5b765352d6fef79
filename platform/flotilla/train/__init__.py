"""Training model families with Ray Train (DDP or DeepSpeed); see :func:`flotilla.train.run.train`.

The package is callable, ``flotilla.train(spec)`` being the API (see :mod:`flotilla._callable`).
"""

from flotilla._callable import make_callable

make_callable(__name__, "flotilla.train.run", "train")
