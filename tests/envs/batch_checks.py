"""A shared check: an EnvBatch replays per-environment reference rollouts exactly."""

from __future__ import annotations

import numpy as np


def assert_batch_matches_rollouts(batch, refs, actions) -> None:
    """``refs[j][0]`` is env j's first observation, ``refs[j][t + 1]`` the tuple
    ``(obs, reward, terminated, truncated, final_obs or None)`` after ``actions[t, j]``,
    with the same-step auto-reset of :class:`seedrl.envs.EnvBatch`."""
    n = len(refs)
    obs = batch.reset()
    for j in range(n):
        np.testing.assert_array_equal(obs[j], refs[j][0])
    lengths = np.zeros(n, int)
    saw = {"terminated": 0, "truncated": 0}
    for t in range(len(actions)):
        res = batch.step(actions[t])
        assert res.obs.shape == (n, *obs.shape[1:]) and res.reward.dtype == np.float32
        assert res.terminated.dtype == bool and res.truncated.dtype == bool
        lengths += 1
        finished = {e.env_index: e for e in res.episodes}
        for j in range(n):
            ref_obs, ref_r, ref_term, ref_trunc, ref_final = refs[j][t + 1]
            np.testing.assert_array_equal(res.obs[j], ref_obs)
            assert res.reward[j] == ref_r
            assert res.terminated[j] == ref_term
            assert res.truncated[j] == (ref_trunc and not ref_term)
            if ref_final is None:
                assert j not in res.final_obs and j not in finished
            else:
                np.testing.assert_array_equal(res.final_obs[j], ref_final)
                assert finished[j] == (j, float(lengths[j]), lengths[j])  # CartPole: return = length
                saw["terminated" if ref_term else "truncated"] += 1
                lengths[j] = 0
    assert saw["terminated"] > 5 and saw["truncated"] > 5
