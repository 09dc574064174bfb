"""Held-out perplexity of the built-in model on the story corpus.

Usage::

    python benchmarks/builtin_perplexity.py [--n 500] [--model builtin]

Prints one row per held-out split and one per topic of the test split. Perplexity is
token-level, ``exp(mean NLL)`` over every story token after the first plus the closing
EOS; a uniform guess over the vocabulary would score ``len(tokenizer)``.
"""

from __future__ import annotations

import argparse
import time

from lm_gym.models import load_model_and_tokenizer
from lm_gym.models.corpus import TOPICS, corpus
from lm_gym.models.pretrain import perplexity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="stories per held-out split")
    parser.add_argument("--model", default="builtin", help="'builtin', a path or a HF name")
    args = parser.parse_args()

    model, tokenizer = load_model_and_tokenizer(args.model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.model}  params: {n_params / 1e6:.2f} M  vocab: {len(tokenizer)}")
    print(f"{'split':<16}{'stories':>8}{'ppl':>10}")
    t0 = time.perf_counter()
    for split in ("valid", "test"):
        stories = corpus(split, args.n)
        print(f"{split:<16}{len(stories):>8}{perplexity(model, tokenizer, stories):>10.2f}")
    test = corpus("test", args.n)
    for topic in TOPICS:
        stories = [s for s in test if s.topic == topic]
        print(f"{'test/' + topic:<16}{len(stories):>8}{perplexity(model, tokenizer, stories):>10.2f}")
    print(f"(uniform guess: {len(tokenizer)}; {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
