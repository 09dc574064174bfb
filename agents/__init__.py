"""Learners for lm_gym environments."""
