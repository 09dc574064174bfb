"""lm_gym: reinforcement learning for language models as Gymnasium environments."""

__version__ = "0.1.0"
