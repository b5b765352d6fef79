"""Training model families with Ray Train (DDP or DeepSpeed); see :func:`flotilla.train.run.train`."""
