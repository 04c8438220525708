"""Backend-agnostic LM plumbing: the LM call site and shared forwards, the rollout KV cache, the actor-critic
core both backends build on, KL to the initial LM, and LoRA. Nothing here imports SB3 or Ray."""
