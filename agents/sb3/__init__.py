"""Stable-Baselines3 backend: LM policies for PPO/A2C/TRPO/MaskablePPO and DQN/QR-DQN, episode buffers, the
KL-shaping callback, NLPO masks and the algorithm registry (stock SB3 / sb3-contrib classes throughout).

Importing it (or anything in it: ``from agents import LMActorCriticPolicy``) registers the policy alias
``"LMPolicy"`` on SB3's and sb3-contrib's algorithm classes, so that ``PPO("LMPolicy", env)`` works as
``PPO("MlpPolicy", env)`` does.
"""

from agents.sb3.algorithms import register_policy_aliases

register_policy_aliases()
