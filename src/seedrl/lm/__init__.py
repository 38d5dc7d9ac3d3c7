"""Language-model workflows built on the seedrl LM layer.

* :func:`setup_toy` / :func:`make_world` (``seedrl.lm.toy_setup``): tokenizer, tiny
  models and SFT-trained reference / teacher policies for a toy world.
"""

from seedrl.lm.toy_setup import ToySetup, make_world, read_toy_info, setup_toy, world_name

__all__ = ["ToySetup", "make_world", "read_toy_info", "setup_toy", "world_name"]
