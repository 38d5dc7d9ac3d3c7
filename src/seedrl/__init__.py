"""seedrl: scalable reinforcement learning and distillation.

One runtime for games and language models: actors step environments, central
inference batches every policy forward pass, learners train, and every
trajectory is an RLDS episode in the trajectory store (:mod:`seedrl.data`).
"""

__version__ = "0.1.0"
