"""Rollout speed through the env API vs ``model.generate``, and rollout-buffer memory.

Measures, in one run and on the same model (the built-in LM), tokens/s of

- rollouts through ``gym.make_vec(..., vectorization_mode="vector_entry_point")`` driven by
  ``agents.make("model", envs)``: KV-cached ``predict`` with ``episode_start`` flags, every
  slot stepping every step, episodes autoresetting (prefilled) as they end; and the plain
  Gymnasium loop, ``predict(obs)`` without flags (the policy tells for itself which slots
  continue and which restart);
- ``model.generate`` (sampling, KV cache) of the stock Hugging Face model (as
  ``AutoModelForCausalLM.from_pretrained`` gives it), on the same prompts, batch and length
  (``min_new_tokens = max_new_tokens`` so every row generates the full length),

at batch 1, 16 and 64, and prints the ratio rollout / generate (target >= 1.0 at 16 and
64). Same length means EOS is masked on both sides (generate's ``min_new_tokens``, the
agent's action mask), so every episode runs the full budget. The last columns show free-running
rollouts, where EOS ends episodes early and their slots restart (prefill) mid-batch, with
their ratio to the same ``generate`` (targets: >= 1.5 without EOS, >= 1.2 with EOS restarts,
in the plain loop). The env's reward is replaced by a constant so that only generation is timed (the
task's scorers are benchmarked elsewhere). It then reports rollout-buffer bytes per token
(``RolloutBatch.nbytes() / (B x (P + C))``, with reference log-probs) for a toy vocabulary
and the built-in LM's: the contract is that it does not grow with the vocabulary.

    nice python benchmarks/rollout_vs_generate.py [--env lm_gym/Continuation-v0] [--tokens 24]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from transformers import AutoModelForCausalLM

import agents
import lm_gym
from lm_gym.models import builtin_path, load_model_and_tokenizer


def zero_reward(prompts: list[str], completions: list[str], **meta: object) -> list[float]:
    return [0.0] * len(completions)


class Rollout:
    """Env-API rollouts of ``batch`` slots with the "model" agent."""

    def __init__(
        self, env_id: str, batch: int, tokens: int, *, allow_eos: bool = False, flags: bool = True
    ) -> None:
        self.envs = gym.make_vec(env_id, num_envs=batch, vectorization_mode="vector_entry_point",
                                 autoreset_mode="SameStep", reward=zero_reward, max_new_tokens=tokens,
                                 copy=False)  # views: predict consumes each obs before the next step
        self.agent = agents.make("model", self.envs, seed=0)
        self.batch, self.tokens, self.flags = batch, tokens, flags
        if not allow_eos:  # as generate's min_new_tokens: EOS masked, every episode runs `tokens`
            eos = self.agent.info.eos_token_id
            mask = np.ones(self.envs.single_action_space.n, dtype=bool)
            if self.agent.action_mask is not None:
                mask &= self.agent.action_mask
            mask[eos] = False
            mask.flags.writeable = False  # as the env's own masks: the policy converts it once
            self.agent.action_mask = mask
        obs, _ = self.envs.reset(seed=0)
        self.first_obs = {k: v.copy() for k, v in obs.items()}
        self.tokens_per_s(1)  # warm-up

    def tokens_per_s(self, rounds: int) -> float:
        obs, _ = self.envs.reset(seed=0)
        start_flags = np.ones(self.batch, dtype=bool)
        start = time.perf_counter()
        for _ in range(rounds * self.tokens):
            actions, _ = self.agent.predict(obs, episode_start=start_flags if self.flags else None)
            obs, _, terminated, truncated, _ = self.envs.step(actions)
            start_flags = terminated | truncated
        return self.batch * rounds * self.tokens / (time.perf_counter() - start)


class Generate:
    """``model.generate`` on the rollout's first prompts, sampling the full length."""

    def __init__(self, model: torch.nn.Module, tokenizer: object, first_obs: dict, tokens: int) -> None:
        mask = torch.as_tensor(first_obs["attention_mask"]).long()
        keep = mask.sum(0) > 0  # drop all-padding columns (generate gets the prompts alone)
        self.ids = torch.as_tensor(first_obs["input_ids"])[:, keep]
        self.mask = mask[:, keep]
        self.model, self.tokens = model, tokens
        self.kwargs = dict(do_sample=True, top_k=0, max_new_tokens=tokens, min_new_tokens=tokens,
                           pad_token_id=tokenizer.pad_token_id)
        self.tokens_per_s(1)  # warm-up

    def tokens_per_s(self, rounds: int) -> float:
        with torch.no_grad():
            start = time.perf_counter()
            for _ in range(rounds):
                self.model.generate(input_ids=self.ids, attention_mask=self.mask, **self.kwargs)
        return self.ids.shape[0] * self.tokens * rounds / (time.perf_counter() - start)


def buffer_bytes_per_token(env_id: str, **env_kwargs: object) -> tuple[int, float]:
    agent = agents.make("ppo", env_id, n_envs=8, batch_size=8, seed=0, kl_coef=0.1, env_kwargs=env_kwargs)
    batch = agent.rollout()
    return int(agent.env.single_action_space.n), batch.nbytes() / batch.input_ids.numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="lm_gym/Continuation-v0", help="a text env id on the built-in model")
    parser.add_argument("--tokens", type=int, default=24, help="new tokens per episode (both sides)")
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=4, help="episodes per slot per timing")
    parser.add_argument("--repeats", type=int, default=4, help="timings per measurement (best kept)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    assert lm_gym  # registers the ids
    model, tokenizer = load_model_and_tokenizer("builtin")
    # The reference is generate as a Hugging Face user runs it: the stock model, its "gelu_new"
    # in Python (lm_gym's loaders swap it for the fused kernel; that column is printed too).
    stock = AutoModelForCausalLM.from_pretrained(builtin_path()).eval()
    print(f"model: builtin ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params), "
          f"{args.tokens} new tokens, {args.threads} torch thread(s), env {args.env}")
    columns = {  # name: (allow EOS, episode_start flags)
        "flags": (False, True),
        "plain": (False, False),
        "EOS flags": (True, True),
        "EOS plain": (True, False),
    }
    print(f"| {'batch':>5} | {'generate tok/s':>14} | "
          + " | ".join(f"{name + ' tok/s':>15} | {'ratio':>5}" for name in columns) + " |")
    print("|------:|---------------:|" + "----------------:|------:|" * len(columns))
    for b in args.batches:
        runners = {name: Rollout(args.env, b, args.tokens, allow_eos=eos, flags=flags)
                   for name, (eos, flags) in columns.items()}
        runners["generate"] = Generate(stock, tokenizer, runners["flags"].first_obs, args.tokens)
        runners["fused generate"] = Generate(model, tokenizer, runners["flags"].first_obs, args.tokens)
        best = dict.fromkeys(runners, 0.0)
        for _ in range(args.repeats):  # interleaved, best of n: the machine may be shared
            for key, runner in runners.items():
                best[key] = max(best[key], runner.tokens_per_s(args.rounds))
        g = best["generate"]
        print(f"| {b:5d} | {g:14.0f} | "
              + " | ".join(f"{best[name]:15.0f} | {best[name] / g:5.2f}" for name in columns) + " |"
              + f"  (fused-GELU generate {best['fused generate']:.0f} tok/s: plain {best['plain'] / best['fused generate']:.2f}x,"
              f" EOS plain {best['EOS plain'] / best['fused generate']:.2f}x)", flush=True)
    print()
    print(f"| {'env':<24} | {'vocab':>6} | {'buffer bytes/token':>18} |")
    print("|--------------------------|-------:|-------------------:|")
    for env_id, kw in (("lm_gym/Copy-v0", {}), (args.env, {"max_new_tokens": args.tokens})):
        vocab, per_token = buffer_bytes_per_token(env_id, **kw)
        print(f"| {env_id:<24} | {vocab:6d} | {per_token:18.1f} |", flush=True)


if __name__ == "__main__":
    main()
