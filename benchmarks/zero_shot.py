"""The zero-shot row every learner must beat: each text task's mean reward and components
for the built-in model sampling at temperature 1 (``agents.make("model", ...)``), next to
the random agent, on the held-out prompts (``split="test"``, as the text suite evaluates).

    python benchmarks/zero_shot.py [--episodes 200] [--split test] [--envs lm_gym/SentimentContinuation-v0,...]
"""

from __future__ import annotations

import argparse
import time

import lm_gym
from agents import evaluate, make
from lm_gym.tasks.text import PROMPT_SPLITS

TEXT_IDS = [
    "lm_gym/SentimentContinuation-v0",
    "lm_gym/TopicSteering-v1",
    "lm_gym/KeywordStory-v1",
    "lm_gym/KeywordStory-v2",
    "lm_gym/Continuation-v1",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=200, help="episodes per (env, agent)")
    parser.add_argument("--envs", default=",".join(TEXT_IDS), help="comma-separated env ids")
    parser.add_argument("--model", default=None, help="model name or path for the text envs (default: each env's own)")
    parser.add_argument("--split", default="test", choices=list(PROMPT_SPLITS),
                        help="prompt split to evaluate on (default: the held-out one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    env_ids = [e for e in args.envs.split(",") if e]
    unknown = [e for e in env_ids if e not in lm_gym.list_envs()]
    if unknown:
        parser.error(f"unknown env ids {unknown}; see `lm-gym list`")

    print("| env | agent | mean reward ± std | fluency | relevance | diversity | distinct-2 | mean length | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for env_id in env_ids:
        for name, config in (("model", {"temperature": 1.0}), ("random", {})):
            start = time.perf_counter()
            env_kwargs = {"model": args.model} if args.model else {}
            agent = make(name, env_id, seed=args.seed, n_envs=16, env_kwargs=env_kwargs, **config)
            r = evaluate(agent, env_id, n_episodes=args.episodes, seed=args.seed, n_envs=16,
                         split=args.split, **env_kwargs)
            print(
                f"| {env_id} | {'zero-shot (T=1)' if name == 'model' else 'random'} "
                f"| {r['mean_reward']:.3f} ± {r['std_reward']:.3f} "
                f"| {r['reward/fluency']:.3f} | {r['reward/relevance']:.3f} | {r['reward/diversity']:.3f} "
                f"| {r['distinct-2']:.3f} | {r['mean_ep_length']:.1f} | {time.perf_counter() - start:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
