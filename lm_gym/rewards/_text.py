"""Dependency-free text helpers shared by the reward functions.

* :func:`words` — lowercase word tokens (letters, digits, apostrophes).
* :func:`stem` — a crude, symmetric normaliser for set overlap (topic lexicons,
  prompt/completion continuity): apply it to both sides and compare.
* :func:`inflections` — the regular and common irregular inflections of a lemma, used
  by keyword coverage where precision matters more than for set overlap.
* :func:`check_batch`, :func:`per_sample` — validation of the batched reward contract.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from lm_gym.error import InvalidArgument

_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_VOWELS = frozenset("aeiouy")

# Function words dropped before lexical overlap (continuity, lexical topic relevance).
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been
    before being below between both but by can could did do does doing down during each
    few for from further had has have having he her here hers herself him himself his how
    i if in into is it its itself just me more most my myself no nor not now of off on
    once only or other our ours ourselves out over own same she should so some such than
    that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves one also said says say like then there's
    it's i'm he's she's don't didn't can't won't isn't wasn't""".split()
)

# lemma -> irregular forms. Small on purpose: common verbs, plurals and comparatives.
IRREGULAR: dict[str, tuple[str, ...]] = {
    "be": ("am", "is", "are", "was", "were", "been", "being"),
    "have": ("has", "had", "having"),
    "do": ("does", "did", "done", "doing"),
    "go": ("goes", "went", "gone"),
    "run": ("ran",),
    "eat": ("ate", "eaten"),
    "see": ("saw", "seen"),
    "swim": ("swam", "swum"),
    "sing": ("sang", "sung"),
    "write": ("wrote", "written"),
    "take": ("took", "taken"),
    "give": ("gave", "given"),
    "throw": ("threw", "thrown"),
    "catch": ("caught",),
    "buy": ("bought",),
    "bring": ("brought",),
    "think": ("thought",),
    "fly": ("flew", "flown", "flies"),
    "sit": ("sat",),
    "stand": ("stood",),
    "find": ("found",),
    "make": ("made",),
    "come": ("came",),
    "get": ("got", "gotten"),
    "ride": ("rode", "ridden"),
    "drive": ("drove", "driven"),
    "fall": ("fell", "fallen"),
    "sleep": ("slept",),
    "feel": ("felt",),
    "leave": ("left",),
    "meet": ("met",),
    "speak": ("spoke", "spoken"),
    "tell": ("told",),
    "sell": ("sold",),
    "win": ("won",),
    "lose": ("lost",),
    "build": ("built",),
    "teach": ("taught",),
    "fight": ("fought",),
    "hold": ("held",),
    "dig": ("dug",),
    "hang": ("hung",),
    "bite": ("bit", "bitten"),
    "hide": ("hid", "hidden"),
    "blow": ("blew", "blown"),
    "grow": ("grew", "grown"),
    "know": ("knew", "known"),
    "draw": ("drew", "drawn"),
    "break": ("broke", "broken"),
    "wear": ("wore", "worn"),
    "begin": ("began", "begun"),
    "drink": ("drank", "drunk"),
    "keep": ("kept",),
    "send": ("sent",),
    "spend": ("spent",),
    "pay": ("paid",),
    "say": ("said",),
    "lay": ("laid",),
    "child": ("children",),
    "person": ("people",),
    "man": ("men",),
    "woman": ("women",),
    "mouse": ("mice",),
    "foot": ("feet",),
    "tooth": ("teeth",),
    "goose": ("geese",),
    "leaf": ("leaves",),
    "knife": ("knives",),
    "wolf": ("wolves",),
    "life": ("lives",),
    "wife": ("wives",),
    "good": ("better", "best"),
    "bad": ("worse", "worst"),
}
_IRREGULAR_LEMMA = {form: lemma for lemma, forms in IRREGULAR.items() for form in forms}


def words(text: str) -> list[str]:
    """Lowercase word tokens of ``text``: runs of letters/digits, keeping ``'s``-style clitics."""
    return _WORD_RE.findall(text.lower())


def content_words(text: str) -> list[str]:
    """:func:`words` without stopwords and one-character tokens."""
    return [w for w in words(text) if w not in STOPWORDS and len(w) > 1]


def _has_vowel(s: str) -> bool:
    return any(c in _VOWELS for c in s)


def stem(word: str) -> str:
    """A crude, symmetric stem: ``stem("running") == stem("runs") == stem("ran") == "run"``.

    Rules, first match wins, each only if the remaining stem keeps a vowel and at least
    3 letters: irregular forms map to their lemma; ``-'s`` is dropped; ``-ies/-ied/-ier/
    -iest/-ily`` become ``-y``; ``-ing``, ``-ed`` (not ``-eed``), ``-es`` after a sibilant,
    ``-s`` (not ``-ss``/``-us``/``-is``), ``-ly`` are removed; a doubled final consonant
    is undoubled (``runn`` → ``run``); a final ``e`` is removed (``make``/``making`` →
    ``mak``). Collisions (``hope``/``hop``) are accepted: use it on both sides of a set
    comparison, never to display words.
    """
    w = word.lower()
    if w.endswith("'s"):
        w = w[:-2]
    if w in _IRREGULAR_LEMMA:
        w = _IRREGULAR_LEMMA[w]
    if len(w) <= 3:
        return w
    for suffix, repl in (("iest", "y"), ("ies", "y"), ("ied", "y"), ("ier", "y"), ("ily", "y")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 2:
            return w[: -len(suffix)] + repl
    base = w
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if not w.endswith(suffix):
            continue
        cand = w[: -len(suffix)]
        if suffix == "ed" and cand.endswith("e"):
            break  # feed, need, speed
        if suffix == "es" and not cand.endswith(("s", "x", "z", "ch", "sh", "o")):
            continue  # "makes" -> try plain "-s"
        if suffix == "s" and w.endswith(("ss", "us", "is")):
            break
        if len(cand) >= 3 and _has_vowel(cand):
            base = cand
        break
    if len(base) >= 4 and base[-1] == base[-2] and base[-1] not in "aeioulsz":
        base = base[:-1]  # runn -> run, stopp -> stop (but fall, miss, buzz stay)
    if len(base) >= 4 and base.endswith("e") and not base.endswith("ee"):
        base = base[:-1]
    return base


def inflections(lemma: str) -> frozenset[str]:
    """The lemma plus its regular inflections and listed irregular forms.

    Covers plurals/3rd person (``-s``, ``-es``, ``y→ies``), past (``-ed``, ``-d``,
    ``y→ied``), ``-ing`` (``e`` dropped, ``ie→ying``), comparatives (``-er/-est``,
    ``-r/-st``, ``y→ier/iest``), adverbs (``-ly``, ``y→ily``, ``le→ly``), with and
    without a doubled final consonant (``run`` → ``running``, ``big`` → ``bigger``), and
    the irregular forms in :data:`IRREGULAR` (``run`` → ``ran``).
    """
    k = lemma.lower()
    forms = {k, k + "s", k + "'s"}
    forms.update(IRREGULAR.get(k, ()))
    stems = [k]
    last = k[-1:]
    if len(k) >= 2 and last not in "aeiouwxy" and k[-2] in "aeiou":
        stems.append(k + last)  # CVC doubling: run -> runn(ing), stop -> stopp(ed)
    if last == "y" and len(k) >= 2 and k[-2] not in "aeiou":
        root = k[:-1]
        forms.update({root + "ies", root + "ied", root + "ier", root + "iest", root + "ily"})
    if k.endswith(("s", "x", "z", "ch", "sh", "o")):
        forms.add(k + "es")
    if last == "e":
        forms.update({k + "d", k + "r", k + "st"})
        if k.endswith("ie"):
            forms.add(k[:-2] + "ying")
        elif not k.endswith(("ee", "ye", "oe")):
            forms.update({k[:-1] + "ing", k[:-1] + "er", k[:-1] + "est"})
        if k.endswith("le"):
            forms.add(k[:-1] + "y")  # gentle -> gently
    if last == "y" and len(k) >= 2 and k[-2] not in "aeiou":
        forms.add(k + "ing")  # try -> trying (the -ied/-ier forms are above)
    elif last != "e":
        for s in stems:
            forms.update({s + "ed", s + "ing", s + "er", s + "est"})
        forms.add(k + "ly")
    return frozenset(forms)


def check_batch(prompts: Sequence[str], completions: Sequence[str]) -> int:
    """Validate a reward call's texts; return the batch size B."""
    if isinstance(prompts, str) or isinstance(completions, str):
        raise InvalidArgument(
            "Reward functions are batched: pass prompts and completions as lists of "
            f"strings, got {type(prompts).__name__} and {type(completions).__name__}."
        )
    if len(prompts) != len(completions):
        raise InvalidArgument(
            f"prompts and completions must have the same length, got {len(prompts)} "
            f"prompts and {len(completions)} completions."
        )
    return len(completions)


def per_sample(meta: Mapping[str, Any], key: str, batch_size: int) -> list[Any] | None:
    """``meta[key]`` as a list of length B (a single string is broadcast), or None if absent."""
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return [value] * batch_size
    value = list(value)
    if len(value) != batch_size:
        raise InvalidArgument(
            f"meta[{key!r}] must hold one entry per sample ({batch_size}), got {len(value)}."
        )
    return value
