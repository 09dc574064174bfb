"""The five toy tasks: tiny character or word vocabularies, no language model needed.

Each prompt ends with a separator (``=`` or ``:``) after which the agent writes its
answer and then EOS. Rewards are in [0, 1] with partial credit so a learner has a
gradient; each task's docstring gives the exact formula.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lm_gym.tasks.base import Prompt, Task, ToyTokenizer, check_int


def positional_match(completion: str, target: str) -> int:
    """How many positions of ``completion`` hold the same symbol as ``target``."""
    return sum(a == b for a, b in zip(completion, target))


class _StringAnswerTask(Task):
    """Shared scoring for tasks whose answer is one exact string (``meta["target"]``).

    Reward = matches / max(len(completion), len(target)), where matches counts positions
    where the completion agrees with the target. A perfect answer scores 1.0, an empty one
    0.0, a wrong-length or partly wrong one in between.
    Components: ``accuracy`` (matches / len(target)), ``length`` (min/max of the two
    lengths, 0 for an empty completion), ``exact`` (1.0 iff completion == target).
    """

    reward_components = ("accuracy", "length", "exact")

    def components(
        self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]
    ) -> dict[str, np.ndarray]:
        return self.score(prompts, completions, meta)[1]

    def score(
        self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        reward, acc, length, exact = [], [], [], []
        for c, t in zip(completions, meta["target"]):
            matches, longest = positional_match(c, t), max(len(c), len(t))
            reward.append(matches / longest)
            acc.append(matches / len(t))
            length.append(min(len(c), len(t)) / longest)
            exact.append(float(c == t))
        table = np.array([reward, acc, length, exact], dtype=np.float64).reshape(4, -1)  # one allocation
        return table[0], {"accuracy": table[1], "length": table[2], "exact": table[3]}


class CopyTask(_StringAnswerTask):
    """Reproduce the prompt string: ``"abca="`` → ``"abca"``.

    Args:
        alphabet_size: how many letters (``a``, ``b``, ...) strings use, 2–26.
        min_length, max_length: the string's length is drawn uniformly in this range.
        max_new_tokens: the answer budget; defaults to ``max_length + 1`` (room for EOS).
    """

    name = "Copy"
    description = "Reproduce the prompt string (toy characters)."

    def __init__(
        self,
        alphabet_size: int = 4,
        min_length: int = 2,
        max_length: int = 4,
        max_new_tokens: int | None = None,
    ) -> None:
        check_int("alphabet_size", alphabet_size, low=2, high=26)
        check_int("min_length", min_length, low=1, high=32)
        check_int("max_length", max_length, low=min_length, high=32)
        super().__init__(
            max_new_tokens=max_length + 1 if max_new_tokens is None else max_new_tokens,
            max_prompt_tokens=max_length + 1,
        )
        self.alphabet = string.ascii_lowercase[:alphabet_size]
        self.min_length, self.max_length = min_length, max_length
        self._tokenizer = ToyTokenizer([*self.alphabet, "="])

    def valid_token_ids(self) -> Sequence[int]:
        return [self.tokenizer.eos_token_id, *self._tokenizer.ids_of(list(self.alphabet))]

    def sample(self, np_random: np.random.Generator) -> Prompt:
        # One draw for the length and the symbols (a scalar draw costs as much as a vector).
        u = np_random.random(self.max_length + 1)
        n = self.min_length + int(u[0] * (self.max_length - self.min_length + 1))
        s = "".join(map(self.alphabet.__getitem__, (u[1 : n + 1] * len(self.alphabet)).astype(np.int64).tolist()))
        return Prompt(f"{s}=", {"target": self.target(s)})

    def target(self, s: str) -> str:
        return s


class ReverseTask(CopyTask):
    """Write the prompt string reversed: ``"abcd="`` → ``"dcba"``.

    Same arguments, reward and components as Copy.
    """

    name = "Reverse"
    description = "Write the prompt string reversed (toy characters)."

    def target(self, s: str) -> str:
        return s[::-1]


class AdditionTask(_StringAnswerTask):
    """Add two numbers: ``"12+34="`` → ``"46"``.

    Args:
        n_digits: each operand has 1 to ``n_digits`` digits (uniform over 0 .. 10**n_digits - 1).
        max_new_tokens: the answer budget; defaults to ``n_digits + 2`` (a carry digit and EOS).
    """

    name = "Addition"
    description = "Write the sum of the two numbers (digits, + and =)."

    def __init__(self, n_digits: int = 1, max_new_tokens: int | None = None) -> None:
        check_int("n_digits", n_digits, low=1, high=9)
        super().__init__(
            max_new_tokens=n_digits + 2 if max_new_tokens is None else max_new_tokens,
            max_prompt_tokens=2 * n_digits + 2,
        )
        self.n_digits = n_digits
        self._tokenizer = ToyTokenizer([*string.digits, "+", "="])

    def valid_token_ids(self) -> Sequence[int]:
        return [self.tokenizer.eos_token_id, *self._tokenizer.ids_of(list(string.digits))]

    def sample(self, np_random: np.random.Generator) -> Prompt:
        a, b = (int(x) for x in np_random.integers(0, 10**self.n_digits, size=2))
        return Prompt(f"{a}+{b}=", {"target": str(a + b)})


class ParenthesesTask(Task):
    """Write a balanced string of parentheses of the asked length: ``"4="`` → ``"(())"`` or ``"()()"``.

    Reward = balance × length, where for a completion ``c`` asked for length ``n``:
    ``balance = 1 − errors / len(c)`` (errors = unmatched ``)`` + unclosed ``(`` + any other
    character) and ``length = min(len(c), n) / max(len(c), n)``. Empty → 0.0; any balanced
    string of the right length → 1.0. Components: ``balance``, ``length``, ``exact``
    (1.0 iff balanced and of length n).

    Args:
        min_pairs, max_pairs: the asked length is 2 × pairs, pairs uniform in this range.
        max_new_tokens: the answer budget; defaults to ``2 * max_pairs + 1``.
    """

    name = "Parentheses"
    description = "Write a balanced string of parentheses of the asked length."
    reward_components = ("balance", "length", "exact")

    def __init__(
        self, min_pairs: int = 1, max_pairs: int = 3, max_new_tokens: int | None = None
    ) -> None:
        check_int("min_pairs", min_pairs, low=1, high=16)
        check_int("max_pairs", max_pairs, low=min_pairs, high=16)
        super().__init__(
            max_new_tokens=2 * max_pairs + 1 if max_new_tokens is None else max_new_tokens,
            max_prompt_tokens=3,
        )
        self.min_pairs, self.max_pairs = min_pairs, max_pairs
        self._tokenizer = ToyTokenizer(["(", ")", *string.digits, "="])

    def valid_token_ids(self) -> Sequence[int]:
        return [self.tokenizer.eos_token_id, *self._tokenizer.ids_of(["(", ")"])]

    def sample(self, np_random: np.random.Generator) -> Prompt:
        n = 2 * int(np_random.integers(self.min_pairs, self.max_pairs + 1))
        return Prompt(f"{n}=", {"length": n})

    @staticmethod
    def balance_errors(c: str) -> int:
        depth = errors = 0
        for ch in c:
            if ch == "(":
                depth += 1
            elif ch == ")" and depth > 0:
                depth -= 1
            else:  # an unmatched ")" or a stray character
                errors += 1
        return errors + depth

    def components(
        self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]
    ) -> dict[str, np.ndarray]:
        bal, length, exact = (np.zeros(len(completions)) for _ in range(3))
        for i, (c, n) in enumerate(zip(completions, meta["length"])):
            if not c:
                continue
            errors = self.balance_errors(c)
            bal[i] = 1.0 - errors / len(c)
            length[i] = min(len(c), n) / max(len(c), n)
            exact[i] = float(errors == 0 and len(c) == n)
        return {"balance": bal, "length": length, "exact": exact}

    def score(
        self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        comps = self.components(prompts, completions, meta)
        return comps["balance"] * comps["length"], comps


# The toy word grammar of KeywordToy: word classes and the class-level bigram model.
WORD_CLASSES: dict[str, tuple[str, ...]] = {
    "DET": ("the", "a"),
    "ADJ": ("big", "small", "red", "old", "happy", "sad"),
    "NOUN": ("cat", "dog", "bird", "fish", "boy", "girl", "tree", "ball", "house", "car", "book", "cake"),
    "VERB": ("sees", "likes", "finds", "chases", "eats", "has"),
    "CONJ": ("and",),
}
# P(next class | class); "<s>" starts a text, "</s>" ends it. Missing entries are 0.
CLASS_BIGRAMS: dict[str, dict[str, float]] = {
    "<s>": {"DET": 1.0},
    "DET": {"ADJ": 0.4, "NOUN": 0.6},
    "ADJ": {"NOUN": 1.0},
    "NOUN": {"</s>": 0.5, "VERB": 0.4, "CONJ": 0.1},
    "VERB": {"DET": 1.0},
    "CONJ": {"DET": 1.0},
}


class KeywordToyTask(Task):
    """The composite reward in miniature, on a toy word vocabulary.

    The prompt lists keywords (nouns) then ``:``; the agent writes words, then EOS.
    ``R = α·fluency + β·relevance + γ·diversity`` (defaults α=0.4, β=0.4, γ=0.2;
    ``reward_weights=`` changes them), each component in [0, 1]:

    * fluency: under a fixed bigram model of the toy grammar (``CLASS_BIGRAMS``: words
      of a class share its probability), the mean over the text's transitions — from the
      start symbol, between words, and to the end — of
      ``P(class_t | class_{t−1}) / max_c P(c | class_{t−1})``. "the cat" scores 1.0.
    * relevance: the fraction of the prompt's keywords the completion uses.
    * diversity: distinct-2, unique word bigrams / all word bigrams (a one-word text: 1.0).

    An empty completion scores 0.0 on every component.

    Args:
        n_keywords: how many keywords each prompt asks for.
        max_new_tokens: the answer budget in words.
    """

    name = "KeywordToy"
    description = "The composite (fluency, keyword relevance, diversity) on a toy word vocabulary."
    reward_components = ("fluency", "relevance", "diversity")
    default_weights = {"fluency": 0.4, "relevance": 0.4, "diversity": 0.2}

    def __init__(self, n_keywords: int = 2, max_new_tokens: int = 8) -> None:
        check_int("n_keywords", n_keywords, low=1, high=4)
        super().__init__(max_new_tokens=max_new_tokens, max_prompt_tokens=n_keywords + 1)
        self.n_keywords = n_keywords
        words = [w for ws in WORD_CLASSES.values() for w in ws]
        self._tokenizer = ToyTokenizer([*words, ":"], word_level=True)
        self._word_ids = self._tokenizer.ids_of(words)
        self.word_class = {w: c for c, ws in WORD_CLASSES.items() for w in ws}

    def valid_token_ids(self) -> Sequence[int]:
        return [self.tokenizer.eos_token_id, *self._word_ids]

    def sample(self, np_random: np.random.Generator) -> Prompt:
        nouns = WORD_CLASSES["NOUN"]
        idx = np_random.choice(len(nouns), size=self.n_keywords, replace=False)
        keywords = [nouns[i] for i in idx]
        return Prompt(" ".join(keywords) + " :", {"keywords": keywords})

    def fluency(self, words: list[str]) -> float:
        if not words:
            return 0.0
        classes = ["<s>", *(self.word_class.get(w, "?") for w in words), "</s>"]
        ratios = []
        for prev, cur in zip(classes[:-1], classes[1:]):
            row = CLASS_BIGRAMS.get(prev, {})
            ratios.append(row.get(cur, 0.0) / max(row.values()) if row else 0.0)
        return float(np.mean(ratios))

    def components(
        self, prompts: list[str], completions: list[str], meta: Mapping[str, list[Any]]
    ) -> dict[str, np.ndarray]:
        flu, rel, div = (np.zeros(len(completions)) for _ in range(3))
        for i, (c, keywords) in enumerate(zip(completions, meta["keywords"])):
            words = c.split()
            if not words:
                continue
            flu[i] = self.fluency(words)
            rel[i] = sum(k in words for k in keywords) / len(keywords)
            bigrams = list(zip(words[:-1], words[1:]))
            div[i] = len(set(bigrams)) / len(bigrams) if bigrams else 1.0
        return {"fluency": flu, "relevance": rel, "diversity": div}


TOY_TASKS: dict[str, type[Task]] = {
    "Copy": CopyTask,
    "Reverse": ReverseTask,
    "Addition": AdditionTask,
    "Parentheses": ParenthesesTask,
    "KeywordToy": KeywordToyTask,
}

