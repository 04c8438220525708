"""RLlib episodes travel as tokens (agents.rllib.transport): the learner rebuilds every window exactly, KL shaping sees
the same numbers, and what crosses the object store is O(tokens)."""

import pickle

import numpy as np
import pytest
import torch

pytest.importorskip("ray.rllib")
from ray.rllib.connectors.learner.add_one_ts_to_episodes_and_truncate import \
    add_one_ts_to_episodes_and_truncate  # noqa: E402
from ray.rllib.core import DEFAULT_MODULE_ID  # noqa: E402
from ray.rllib.core.columns import Columns  # noqa: E402
from ray.rllib.env.single_agent_episode import SingleAgentEpisode  # noqa: E402
from ray.rllib.utils.metrics.metrics_logger import MetricsLogger  # noqa: E402

import lm_gym  # noqa: E402
from agents.rllib.kl import KLShaping  # noqa: E402
from agents.rllib.module import LMRLModule  # noqa: E402
from agents.rllib.segments import BOOTSTRAP_STEP_ADDED  # noqa: E402
from agents.rllib.transport import TokenDeltas, TokensToWindows, WindowsFromTokens, forget_tokens, \
    window_space  # noqa: E402
from test_multiturn import SayWord  # noqa: E402


class Recording(TokenDeltas):
    """TokenDeltas that also keeps every window it compacted (what RLlib shipped before)."""

    def __init__(self, env):
        super().__init__(env)
        self.windows = []

    def compact(self, obs, info, action):
        self.windows.append({key: value.copy() for key, value in obs.items()})
        return super().compact(obs, info, action)


def new_episode(obs, info, env):
    return SingleAgentEpisode(observations=[obs], infos=[info], observation_space=env.observation_space,
                              action_space=env.action_space, len_lookback_buffer=0)


def sample(env, steps=60, chunk=7, seed=0, restore_at_cuts=False):
    """What an env runner does: step, call the env-to-module connector after every step, cut running episodes into
    chunks every ``chunk`` steps (as a rollout's end does). Returns the compact chunks, the same chunks with windows
    (RLlib's transport before), and every window the connector served against the env's own. ``restore_at_cuts``:
    at every cut, the runner restarts from a checkpoint (a new connector, the wrapper's tokens lost, the episode
    restored)."""
    env = Recording(env)
    rng = np.random.default_rng(seed)
    connector = WindowsFromTokens(env.observation_space, env.action_space)
    compact, plain = [], []
    served = []

    def serve(episode):
        batch = connector(rl_module=None, batch={}, episodes=[episode])  # the connector at the time of the call
        served.append((list(batch[Columns.OBS].values())[0][-1], env.windows[-1]))

    obs, info = env.reset(seed=seed)
    episode, windows = new_episode(obs, info, env), [env.windows[-1]]
    serve(episode)
    for _ in range(steps):
        action = int(rng.integers(0, env.action_space.n))
        obs, reward, terminated, truncated, info = env.step(action)
        episode.add_env_step(obs, action, reward, infos=info, terminated=terminated, truncated=truncated,
                             extra_model_outputs={Columns.ACTION_LOGP: np.float32(-1.0)})
        windows.append(env.windows[-1])
        serve(episode)
        if terminated or truncated or len(episode) == chunk:
            compact.append(episode)
            plain.append(with_windows(episode, windows, env.env.observation_space))
            if terminated or truncated:
                obs, info = env.reset()
                episode, windows = new_episode(obs, info, env), [env.windows[-1]]
                serve(episode)
            else:
                episode, windows = episode.cut(), [windows[-1]]
                if restore_at_cuts:
                    connector = WindowsFromTokens(env.observation_space, env.action_space)
                    state = env.unwrapped.get_state()
                    env.reset()  # what agents.rllib.sampling_state does: a reset, the saved state set back
                    env.unwrapped.set_state(state)
                    forget_tokens(env)
    return compact, plain, served, env


def with_windows(episode, windows, space):
    """The same chunk as RLlib kept it without the wrapper: every observation a window."""
    plain = SingleAgentEpisode(id_=episode.id_, observations=[*windows], infos=episode.get_infos(slice(0, None)),
                               actions=list(episode.get_actions(slice(0, None))),
                               rewards=list(episode.get_rewards(slice(0, None))),
                               extra_model_outputs={Columns.ACTION_LOGP: list(episode.get_extra_model_outputs(
                                   Columns.ACTION_LOGP, slice(0, None)))},
                               terminated=episode.is_terminated, truncated=episode.is_truncated,
                               t_started=episode.t_started, observation_space=space,
                               action_space=episode.action_space, len_lookback_buffer=0)
    return plain


ENVS = {
    "single-turn": lambda: lm_gym.TextGenEnv(max_new_tokens=16, stop_tokens=[], reward="target_word"),
    # One prompt: a reset before a restored state shows the wrapper the restored episode's own prompt.
    "one prompt": lambda: lm_gym.TextGenEnv(prompts=["the movie was"], max_new_tokens=16, stop_tokens=[],
                                            reward="target_word"),
    "multi-turn replies": lambda: lm_gym.MultiTurnEnv(SayWord, max_tokens=48, max_turn_tokens=4),
}


@pytest.mark.parametrize("restored", [False, True], ids=["", "runner restored at every cut"])
@pytest.mark.parametrize("case", list(ENVS))
def test_learners_rebuild_every_window_and_kl_shaping_sees_the_same_numbers(case, restored):
    compact, plain, served, env = sample(ENVS[case](), restore_at_cuts=restored)
    for window, truth in served:  # what the module sampled from on the runner
        for key in truth:
            np.testing.assert_array_equal(window[key], truth[key])
    assert any(c.t_started > 0 for c in compact), "chunks that continue an episode"
    shipped = [pickle.loads(pickle.dumps(c.to_numpy())) for c in compact]  # through the object store
    plain = [c.to_numpy() for c in plain]
    space = window_space(env.observation_space, env.action_space)
    module = LMRLModule(observation_space=space, action_space=env.action_space, model_config={"kl_coef": 0.5})
    with torch.no_grad():  # a policy away from the reference, so that the KL is not zero
        module.lm.lm_head.weight.add_(0.3 * torch.randn_like(module.lm.lm_head.weight))
    for episodes in (shipped, plain):
        add_one_ts_to_episodes_and_truncate(episodes)  # what RLlib's PPO/IMPALA learners do first
    TokensToWindows()(rl_module={DEFAULT_MODULE_ID: module}, batch={}, episodes=shipped)
    for rebuilt, truth in zip(shipped, plain):
        for key in ("input_ids", "attention_mask"):
            np.testing.assert_array_equal(rebuilt.get_observations(slice(0, len(truth)))[key],
                                          truth.get_observations(slice(0, len(truth)))[key])
    for episodes in (shipped, plain):
        KLShaping()(rl_module={DEFAULT_MODULE_ID: module}, batch={}, episodes=episodes,
                    shared_data={BOOTSTRAP_STEP_ADDED: True}, metrics=MetricsLogger())
    for rebuilt, truth in zip(shipped, plain):
        np.testing.assert_array_equal(rebuilt.get_rewards(), truth.get_rewards())
    assert any(np.abs(np.asarray(t.get_rewards())).max() > 0 for t in plain)


def test_what_crosses_the_object_store_grows_with_tokens_not_windows():
    sizes = {}  # bytes per token beyond what the actions, rewards, log-probs and the env's infos cost
    for new_tokens in (16, 48):
        env = lm_gym.TextGenEnv(max_new_tokens=new_tokens, stop_tokens=[], max_prompt_tokens=8)
        compact, plain, _, _ = sample(env, steps=4 * new_tokens, chunk=10_000)
        steps = sum(len(c) for c in compact)
        floats = sum(len(pickle.dumps(c.to_numpy())) for c in drop_observations(compact))
        sizes[new_tokens] = tuple((sum(len(pickle.dumps(c.to_numpy())) for c in chunks) - floats) / steps
                                  for chunks in (compact, plain))
    (compact_16, plain_16), (compact_48, plain_48) = sizes[16], sizes[48]
    assert compact_48 <= 64 and compact_16 <= 64, sizes  # observations and token deltas, per token
    assert plain_16 >= 16 * (8 + 16) and plain_48 >= 16 * (8 + 48), sizes  # int64 ids and mask of the window


def drop_observations(chunks):
    """The chunks with constant, tiny observations: what their actions, rewards, log-probs and infos cost alone."""
    out = []
    for c in chunks:
        out.append(SingleAgentEpisode(id_=c.id_, observations=[{"length": np.int32(0)}] * (len(c) + 1),
                                      infos=[{k: v for k, v in i.items() if not k.startswith("lm_gym/")}
                                             for i in c.get_infos(slice(0, None))],
                                      actions=list(c.get_actions(slice(0, None))),
                                      rewards=list(c.get_rewards(slice(0, None))),
                                      extra_model_outputs={Columns.ACTION_LOGP: list(c.get_extra_model_outputs(
                                          Columns.ACTION_LOGP, slice(0, None)))},
                                      terminated=c.is_terminated, truncated=c.is_truncated,
                                      observation_space=c.observation_space, action_space=c.action_space,
                                      len_lookback_buffer=0))
    return out

