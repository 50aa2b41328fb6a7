"""The training runtime: the loop, checkpoints, logging, precision, processes."""
