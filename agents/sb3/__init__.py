"""Stable-Baselines3 backend: LM policies for PPO/A2C/TRPO/MaskablePPO and DQN/QR-DQN, episode buffers, the
KL-shaping callback, NLPO masks and the algorithm registry (stock SB3 / sb3-contrib classes throughout)."""
