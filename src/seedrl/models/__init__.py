"""Actor-critic networks for games (SEED RL / IMPALA style).

* Torsos: :class:`MLPTorso` (vectors), :class:`NatureCNN` (DQN, Mnih et al.
  2015), :class:`SmallCNN` (DQN, Mnih et al. 2013), :class:`ImpalaResNet` (IMPALA "deep", Espeholt et al. 2018); each has
  ``output_dim``.
* :class:`ActorCritic`: torso, optional LSTM core, policy logits and value, with
  ``initial_state(B)``, ``step`` (central inference, ``[B, ...]``) and
  ``unroll`` (learner, ``[T, B, ...]``); ``ActorCritic.from_spaces`` and
  :func:`build_model` from a :class:`ModelConfig`.
* :class:`QNetwork` (R2D2): the same body with a plain or dueling Q head, or a
  same-width ReLU layer instead of the LSTM (``recurrent=False``).
* :func:`sample_actions`, :func:`log_probs`, :func:`entropy` on logits.

Example::

    model = ActorCritic.from_spaces(env.observation_space, env.action_space, lstm_size=256)
    state = model.initial_state(num_envs)
    logits, value, state = model.step(obs, state, first, prev_action, prev_reward)
    action = sample_actions(logits)
"""

from seedrl.models.actor_critic import TORSOS, ActorCritic, State
from seedrl.models.config import ModelConfig, build_model
from seedrl.models.distributions import entropy, log_probs, sample_actions
from seedrl.models.q_network import QNetwork
from seedrl.models.torsos import ImpalaResNet, MLPTorso, NatureCNN, SmallCNN, conv_output_size, count_parameters

__all__ = [
    "TORSOS",
    "ActorCritic",
    "ImpalaResNet",
    "MLPTorso",
    "ModelConfig",
    "NatureCNN",
    "SmallCNN",
    "QNetwork",
    "State",
    "build_model",
    "conv_output_size",
    "count_parameters",
    "entropy",
    "log_probs",
    "sample_actions",
]
