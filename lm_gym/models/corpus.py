"""A procedural English story corpus, generated from a seed.

The built-in language model is pretrained on this corpus, and the text tasks draw their
prompts from its held-out splits, so nothing has to be downloaded. Stories are 3-6
sentences about one of :data:`TOPICS`, with a positive or negative arc, built from
several sentence templates (simple clauses, adjectives, prepositional phrases,
subordinate clauses, dialogue, questions). Word lists are expanded with inflections
(plurals, past tense, ``-ing``, ``-ly``) and procedurally built names, so a few thousand
stories use a few thousand word types.

Example::

    >>> from lm_gym.models.corpus import corpus, prompts
    >>> story = corpus("train", n=1)[0]
    >>> story.topic in TOPICS, story.sentiment in ("positive", "negative")
    (True, True)
"""

from __future__ import annotations

import functools
import itertools
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from lm_gym.error import InvalidArgument, unknown

__all__ = [
    "SENTIMENTS",
    "SPLITS",
    "TOPICS",
    "Story",
    "corpus",
    "generate_stories",
    "prompts",
    "topic_words",
    "vocabulary",
]


@dataclass(frozen=True)
class Story:
    """One generated story.

    Attributes:
        text: the story, 3-6 sentences on one line.
        topic: one of :data:`TOPICS`.
        sentiment: ``"positive"`` or ``"negative"``.
        keywords: content words central to the story (nouns, a verb), each present
            verbatim as a word in ``text``.
    """

    text: str
    topic: str
    sentiment: str
    keywords: tuple[str, ...]


# ----------------------------------------------------------------------------- lexicon

def _w(s: str) -> tuple[str, ...]:
    return tuple(s.split())


_TOPIC_LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    "animals": {
        "nouns": _w(
            "dog cat puppy kitten rabbit horse pony cow pig goat sheep duck goose chicken "
            "hen rooster fox wolf bear deer owl parrot turtle frog mouse squirrel hamster "
            "lion tiger zebra giraffe elephant monkey panda kangaroo camel donkey lamb "
            "calf piglet bunny hedgehog raccoon beaver badger otter lizard snake"
        ),
        "verbs": _w("feed pet watch chase follow wash brush rescue train hug find help carry call"),
        "places": _w("farm zoo barn meadow forest stable pond field"),
        "roles": _w("farmer vet zookeeper shepherd"),
        "adjs": _w("furry fluffy wild tame spotted striped hungry sleepy tiny gentle"),
        "things": _w("leash collar bowl carrot hay blanket basket fence cage saddle whistle nest"),
    },
    "sports": {
        "nouns": _w(
            "ball bat goal net helmet racket glove whistle team coach referee player "
            "captain trophy medal match game race jersey sneaker skateboard bicycle "
            "puck stick hoop basket court field track pool score champion stadium "
            "crowd fan kick pass shot sprint relay tournament"
        ),
        "verbs": _w("kick throw catch hit pass win practice play chase grab bounce score"),
        "places": _w("stadium gym court field park track rink pool"),
        "roles": _w("coach player captain runner goalkeeper swimmer"),
        "adjs": _w("fast strong quick tired sweaty muddy final winning home rival"),
        "things": _w("water bottle towel bench flag scoreboard cone whistle"),
    },
    "food": {
        "nouns": _w(
            "bread cake cookie pie soup apple banana orange lemon cherry grape strawberry "
            "pancake sandwich pizza pasta noodle rice bean carrot potato tomato onion "
            "pepper cheese butter egg honey jam muffin cupcake salad sauce milk juice tea "
            "chocolate candy cereal biscuit pumpkin corn melon peach pear"
        ),
        "verbs": _w("bake cook taste eat share mix stir slice chop pour serve smell make"),
        "places": _w("kitchen bakery market restaurant cafe garden picnic diner"),
        "roles": _w("baker cook chef grocer waiter"),
        "adjs": _w("sweet sour salty spicy warm crispy fresh juicy delicious burnt"),
        "things": _w("oven spoon bowl plate pan pot knife fork cup jar tray apron recipe"),
    },
    "space": {
        "nouns": _w(
            "rocket star planet moon comet asteroid galaxy astronaut spaceship satellite "
            "telescope orbit meteor nebula sun alien robot crater launch helmet capsule "
            "station engine fuel shuttle universe sky mission signal radio map probe "
            "countdown cosmos eclipse gravity laser module pilot rover"
        ),
        "verbs": _w("launch explore fly orbit build fix steer repair visit study land reach watch"),
        "places": _w("observatory spaceship station launchpad moon planet crater sky"),
        "roles": _w("astronaut pilot scientist engineer explorer"),
        "adjs": _w("distant bright dark silent huge shiny cold faraway glowing strange"),
        "things": _w("spacesuit computer screen button panel ladder hatch antenna camera"),
    },
    "music": {
        "nouns": _w(
            "song piano guitar drum violin flute trumpet harp cello band choir concert "
            "melody rhythm note tune chord singer song lyric stage microphone speaker "
            "orchestra conductor drummer guitarist pianist audience album record "
            "harmony ballad lullaby anthem chorus verse solo duet trombone banjo"
        ),
        "verbs": _w("play sing hum tune practice record write perform strum drum clap dance hear"),
        "places": _w("concert hall studio stage theater church festival club"),
        "roles": _w("singer drummer pianist violinist conductor musician"),
        "adjs": _w("loud soft catchy slow cheerful sad musical rhythmic sweet noisy"),
        "things": _w("headphones speaker ticket poster notebook metronome string bow"),
    },
    "weather": {
        "nouns": _w(
            "rain snow storm wind cloud sun sunshine rainbow thunder lightning fog hail "
            "puddle umbrella raincoat boots snowman snowflake breeze frost ice sky "
            "forecast tornado hurricane flood drought heat season winter summer spring "
            "autumn morning weather temperature shower drizzle blizzard mist"
        ),
        "verbs": _w("watch wait feel check hear see follow fear enjoy chase predict catch"),
        "places": _w("hill valley beach porch window garden town street"),
        "roles": _w("forecaster farmer gardener sailor"),
        "adjs": _w("stormy sunny rainy windy foggy cloudy chilly frozen humid gray"),
        "things": _w("scarf mitten coat jacket hat shovel kite sled thermometer"),
    },
    "school": {
        "nouns": _w(
            "book pencil teacher classroom lesson homework test exam desk chalkboard "
            "backpack notebook paper crayon ruler eraser library recess lunch bus "
            "project poem story question answer grade friend class student principal "
            "science history math art map puzzle report spelling globe playground"
        ),
        "verbs": _w("read write study learn draw solve finish answer ask practice spell count share"),
        "places": _w("school classroom library playground hallway cafeteria gym office"),
        "roles": _w("teacher student principal librarian classmate tutor"),
        "adjs": _w("difficult easy smart curious quiet messy careful early late new"),
        "things": _w("glue scissors folder marker bell clock sticker calendar"),
    },
    "ocean": {
        "nouns": _w(
            "wave boat ship sail shell fish whale dolphin shark crab octopus seal "
            "starfish jellyfish turtle coral reef island beach sand tide anchor "
            "lighthouse harbor captain sailor net pearl seagull dock pier surfboard "
            "submarine treasure diver current shore oyster lobster penguin"
        ),
        "verbs": _w("sail swim dive fish row explore float surf collect watch find catch steer"),
        "places": _w("beach harbor island shore reef dock pier lighthouse"),
        "roles": _w("sailor captain diver fisher surfer lifeguard"),
        "adjs": _w("salty deep blue calm rough sandy wet sparkling foamy endless"),
        "things": _w("bucket shovel towel paddle rope compass mask flipper map"),
    },
}

TOPICS: tuple[str, ...] = tuple(_TOPIC_LEXICON)
"""The story topics."""

SENTIMENTS: tuple[str, ...] = ("positive", "negative")
"""The story sentiments."""

SPLITS: tuple[str, ...] = ("train", "valid", "test")
"""The corpus splits; held-out splits never share a story text with ``train``."""

_SPLIT_SEED = {"train": 1_000, "valid": 2_000, "test": 3_000}
_SPLIT_DEFAULT_N = {"train": 20_000, "valid": 500, "test": 500}

_POS_ADJS = _w(
    "wonderful happy bright lovely kind brave cheerful amazing beautiful perfect "
    "friendly gentle proud calm clever joyful lucky glad warm peaceful great "
    "splendid delightful marvelous excellent pleasant charming graceful hopeful "
    "thankful patient generous honest shiny cozy sunny magical fantastic terrific"
)
_NEG_ADJS = _w(
    "terrible sad gloomy awful lonely angry scared nervous broken cold dull "
    "miserable horrible grumpy tired upset worried dreadful muddy noisy painful "
    "rotten ugly bitter cruel dark weak sick hopeless frightened jealous bored "
    "confused disappointed restless stormy empty messy dangerous"
)
_POS_FEEL = _w("happy proud excited glad thrilled delighted grateful calm cheerful relieved")
_NEG_FEEL = _w("sad angry scared worried upset lonely frustrated nervous miserable disappointed")
_POS_NOUNS = _w("joy fun laughter hope luck friendship kindness success peace courage")
_NEG_NOUNS = _w("trouble fear sorrow failure danger loss pain anger worry mess")
_COLORS = _w("red blue green yellow orange purple pink brown black white gray golden silver")
_SIZES = _w("big small little huge tiny tall short long round heavy light old young")
_NUMBERS = _w("two three four five six seven eight nine ten twelve twenty")
_TIMES = _w("morning afternoon evening night day weekend holiday summer winter spring autumn")
_DAYS = _w("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
_MONTHS = _w("January February March April May June July August September October November December")
_FAMILY = _w("mother father sister brother grandmother grandfather aunt uncle cousin neighbor friend")
_GENERAL_VERBS = _w(
    "walk jump run laugh smile shout whisper cry wait look listen rest climb hurry "
    "wander skip hop stop turn open close push pull lift drop paint clean build "
    "march crawl dance sing shiver sneeze yawn giggle sigh nod wave knock kneel "
    "bow float drift roll slide splash stomp tiptoe sprint stroll travel return"
)
_OBJ_VERBS = _w(
    "see find hold bring take carry keep show give need want like love hate miss "
    "fix paint clean open lose notice remember forget choose pick check "
    "borrow return fold hide protect guard admire describe imagine measure "
    "collect trade wrap mend polish sort press touch greet thank follow"
)
_ADVERB_ADJS = _w(
    "quick slow quiet loud careful happy sad soft gentle brave calm proud eager "
    "nervous angry sudden proper bright warm patient honest glad "
    "silent swift bold cheerful polite wild lazy busy merry sleepy rough fierce"
)
_PREPS = _w("near behind under beside across through inside around past toward")

_NAME_ONSETS = _w(
    "Ma Lu Ti Ro Be Ka No Sa Da El Jo Mi Pe Ra Vi Ze Ha Fi Ga Wi Ta Le Ni Bo Cy "
    "Ar Os Fe Gu Ki Mo Qui Re Su Ya"
)
_NAME_CODAS = _w("ra no la ton ven lie mo sa rin dy bel ko na ric via den ro mi")
_REAL_NAMES = _w(
    "Anna Ben Clara David Emma Finn Grace Henry Ivy Jack Kate Leo Lily Max Mia Noah "
    "Olive Paul Quinn Rosa Sam Tom Uma Vera Will Zoe Alice Oscar Ruby Theo Lucy Hugo"
)

_IRREGULAR_PAST = {
    "be": "was", "begin": "began", "bring": "brought", "build": "built", "buy": "bought",
    "catch": "caught", "choose": "chose", "come": "came", "dive": "dove", "do": "did",
    "draw": "drew", "drink": "drank", "eat": "ate", "fall": "fell", "feed": "fed",
    "feel": "felt", "find": "found", "fly": "flew", "forget": "forgot", "get": "got",
    "give": "gave", "go": "went", "grow": "grew", "have": "had", "hear": "heard",
    "hit": "hit", "hold": "held", "keep": "kept", "know": "knew", "leave": "left",
    "lose": "lost", "make": "made", "meet": "met", "pay": "paid", "put": "put",
    "read": "read", "ride": "rode", "ring": "rang", "run": "ran", "say": "said",
    "see": "saw", "sell": "sold", "send": "sent", "sing": "sang", "sit": "sat",
    "sleep": "slept", "speak": "spoke", "spin": "spun", "stand": "stood", "swim": "swam",
    "take": "took", "teach": "taught", "tell": "told", "think": "thought", "throw": "threw",
    "win": "won", "write": "wrote",
}
_DOUBLING = frozenset(
    "stop drop hop jog plan clap grab skip hum chat swap trip nap pat rub hug tap dip "
    "pet chop strum drum row spin run swim win hit sit get begin".split()
) - {"row"}
_IRREGULAR_PLURAL = {
    "mouse": "mice", "goose": "geese", "sheep": "sheep", "fish": "fish", "deer": "deer",
    "child": "children", "person": "people", "leaf": "leaves", "wolf": "wolves",
    "knife": "knives", "loaf": "loaves", "shelf": "shelves", "tooth": "teeth",
    "foot": "feet", "calf": "calves", "scissors": "scissors", "headphones": "headphones",
    "potato": "potatoes", "tomato": "tomatoes", "hero": "heroes",
}
_VOWELS = frozenset("aeiou")


def _plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURAL:
        return _IRREGULAR_PLURAL[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in _VOWELS:
        return noun[:-1] + "ies"
    return noun + "s"


def _third(verb: str) -> str:
    return {"have": "has", "do": "does", "go": "goes", "be": "is"}.get(verb) or _plural(verb)


def _past(verb: str) -> str:
    if verb in _IRREGULAR_PAST:
        return _IRREGULAR_PAST[verb]
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in _VOWELS:
        return verb[:-1] + "ied"
    if verb in _DOUBLING:
        return verb + verb[-1] + "ed"
    return verb + "ed"


def _ing(verb: str) -> str:
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith(("ee", "ye")) and verb != "be":
        return verb[:-1] + "ing"
    if verb in _DOUBLING:
        return verb + verb[-1] + "ing"
    return verb + "ing"


def _ly(adj: str) -> str:
    if adj.endswith("y"):
        return adj[:-1] + "ily"
    if adj.endswith("le"):
        return adj[:-1] + "y"
    return adj + "ly"


def _article(word: str) -> str:
    return "an" if word[0] in _VOWELS else "a"


@functools.cache
def _names() -> tuple[str, ...]:
    made = [a + b for a in _NAME_ONSETS for b in _NAME_CODAS]
    return tuple(dict.fromkeys(list(_REAL_NAMES) + made))


def topic_words(topic: str) -> list[str]:
    """The lexicon of ``topic``: its nouns (and plurals), verbs (inflected), places,
    roles, adjectives and things, lower-case and deduplicated.

    Used for a lexical topic-relevance score: a text is on-topic if it uses these words.

    Raises:
        UnknownName: if ``topic`` is not one of :data:`TOPICS`.
    """
    if topic not in _TOPIC_LEXICON:
        raise unknown("topic", topic, TOPICS)
    lex = _TOPIC_LEXICON[topic]
    words: list[str] = []
    for key in ("nouns", "places", "roles", "things"):
        for n in lex[key]:
            words += [n, _plural(n)]
    for v in lex["verbs"]:
        words += [v, _third(v), _past(v), _ing(v)]
    words += list(lex["adjs"])
    return list(dict.fromkeys(words))


N_KEYWORDS = 3
"""How many of a story's keywords a keyword list names (KeywordStory's default)."""


def keyword_header(words: tuple[str, ...] | list[str]) -> str:
    """A keyword list as KeywordStory's prompts and keyword-list pretraining write it:
    ``"Keywords: duck, carry, basket."``."""
    return f"Keywords: {', '.join(words)}."


def topic_nouns(topic: str) -> list[str]:
    """The nouns of ``topic`` that no other topic's lexicon uses (TopicSteering's bridge
    words: each names one topic only).

    Raises:
        UnknownName: if ``topic`` is not one of :data:`TOPICS`.
    """
    if topic not in _TOPIC_LEXICON:
        raise unknown("topic", topic, TOPICS)
    others = {w for t in TOPICS if t != topic for w in topic_words(t)}
    return [n for n in _TOPIC_LEXICON[topic]["nouns"] if n not in others]


# ---------------------------------------------------------------------------- generator

class _StoryWriter:
    """Writes one story from a numpy Generator; each method returns one sentence."""

    def __init__(self, rng: np.random.Generator, topic: str, sentiment: str) -> None:
        self.rng = rng
        self.topic = topic
        self.pos = sentiment == "positive"
        self.lex = _TOPIC_LEXICON[topic]
        names = _names()
        i, j = rng.choice(len(names), size=2, replace=False)
        self.hero, self.friend = names[i], names[j]
        female = bool(rng.integers(2))
        self.he, self.him, self.his = ("she", "her", "her") if female else ("he", "him", "his")
        self.noun, self.noun2 = self._pick_two(self.lex["nouns"])
        self.verb = self.pick(self.lex["verbs"])
        self.place = self.pick(self.lex["places"])

    # helpers
    def pick(self, seq: tuple[str, ...] | list[str]) -> str:
        return seq[int(self.rng.integers(len(seq)))]

    def _pick_two(self, seq: tuple[str, ...]) -> tuple[str, str]:
        i, j = self.rng.choice(len(seq), size=2, replace=False)
        return seq[i], seq[j]

    def coin(self, p: float = 0.5) -> bool:
        return bool(self.rng.random() < p)

    def mood_adj(self) -> str:
        return self.pick(_POS_ADJS if self.pos else _NEG_ADJS)

    def feel(self) -> str:
        return self.pick(_POS_FEEL if self.pos else _NEG_FEEL)

    def np_(self, noun: str | None = None, *, det: str | None = None) -> str:
        """A noun phrase with an optional adjective: 'the big red ball', 'a fox'."""
        noun = noun or self.pick(self.lex["nouns"] + self.lex["things"])
        adjs = []
        r = self.rng.random()
        if r < 0.25:
            adjs.append(self.pick(self.lex["adjs"]))
        elif r < 0.4:
            adjs.append(self.pick(_SIZES))
        elif r < 0.55:
            adjs.append(self.pick(_COLORS))
        elif r < 0.7:
            adjs.append(self.mood_adj())
        if self.coin(0.1):
            adjs.insert(0, self.pick(_SIZES))
        phrase = " ".join([*adjs, noun])
        det = det or ("the" if self.coin(0.6) else _article(phrase))
        return f"{det} {phrase}"

    def plural_np(self) -> str:
        n = _plural(self.pick(self.lex["nouns"] + self.lex["things"]))
        if self.coin(0.5):
            return f"{self.pick(_NUMBERS)} {n}"
        return f"{self.pick(self.lex['adjs'] + _COLORS)} {n}" if self.coin(0.5) else n

    def pp(self) -> str:
        """A prepositional phrase: 'near the old barn'."""
        place = self.pick(self.lex["places"] + self.lex["things"])
        return f"{self.pick(_PREPS)} the {place}"

    def when(self) -> str:
        r = self.rng.random()
        if r < 0.3:
            return f"One {self.pick(_TIMES)}"
        if r < 0.5:
            return f"On {self.pick(_DAYS)}"
        if r < 0.65:
            return f"In {self.pick(_MONTHS)}"
        if r < 0.8:
            return f"Last {self.pick(_TIMES)}"
        return f"Early one {self.pick(_TIMES)}"

    def adverb(self) -> str:
        return _ly(self.pick(_ADVERB_ADJS))

    # sentences
    def opening(self) -> str:
        h, k = self.hero, self.rng.integers(7)
        if k == 0:
            return f"{self.when()}, {h} went to the {self.place} with {self.his} {self.pick(_FAMILY)}."
        if k == 1:
            role, adj = self.pick(self.lex["roles"]), self.mood_adj()
            return f"{h} was {_article(adj)} {adj} {role} who loved {self.plural_np()}."
        if k == 2:
            return f"Every {self.pick(_TIMES)}, {h} and {self.friend} {_past(self.pick(_GENERAL_VERBS))} to the {self.place}."
        if k == 3:
            adj = self.pick(self.lex["adjs"])
            return f"There was once {_article(adj)} {adj} {self.noun} {self.pp()}."
        if k == 4:
            return f"{self.when()}, {h} found {self.np_(self.noun, det='a')} {self.pp()}."
        if k == 5:
            return f"{h} lived near the {self.place} and dreamed about {self.plural_np()}."
        return f"It was {_article(self.mood_adj())} {self.mood_adj()} {self.pick(_TIMES)} at the {self.place}."

    def key(self) -> str:
        """The sentence that uses the key verb and noun verbatim."""
        h, v, n = self.pronoun_or_name(), self.verb, self.noun
        k = self.rng.integers(5)
        if k == 0:
            return f"{h} wanted to {v} the {n} {self.pp()}."
        if k == 1:
            return f"{h} had always hoped to {v} {_article(n)} {n} like the one {self.his} {self.pick(_FAMILY)} had."
        if k == 2:
            return f"So {self.he} decided to {v} the {n} before the {self.pick(_TIMES)} was over."
        if k == 3:
            return f'"Let us {v} the {n} together," said {self.friend}.'
        return f"{self.friend} asked {self.him} to {v} the {n} {self.adverb()}."

    def pronoun_or_name(self) -> str:
        return self.hero if self.coin(0.5) else self.he.capitalize()

    def middle(self) -> str:
        h, k = self.pronoun_or_name(), self.rng.integers(10)
        n2 = self.noun2
        if k == 0:  # simple clause + adjective
            return f"The {n2} was {self.mood_adj()} and {self.mood_adj()}."
        if k == 1:  # subordinate clause
            conj = self.pick(("When", "Because", "After", "Although", "While"))
            clause = f"{conj} the {n2} {_past(self.pick(_GENERAL_VERBS))} {self.pp()}"
            return f"{clause}, {self.hero} felt {self.feel()}."
        if k == 2:  # dialogue
            if self.pos:
                line = self.pick(("I love this", "Look at that", "What a great", "I can see the"))
            else:
                line = self.pick(("I hate this", "Watch out for that", "What a terrible", "I lost the"))
            verb = self.pick(("said", "shouted", "whispered", "cried"))
            return f'"{line} {n2}!" {verb} {self.hero}.'
        if k == 3:  # question
            if self.coin(0.5):
                return f'"Can we {self.pick(self.lex["verbs"])} the {n2} {self.pp()}?" asked {self.friend}.'
            return f"Would {self.hero} ever {self.pick(_OBJ_VERBS)} the {n2} again?"
        if k == 4:  # prepositional phrases
            return f"{h} {_past(self.pick(_OBJ_VERBS))} {self.np_(n2)} {self.pp()}."
        if k == 5:  # adverb + participle
            return f"{h} {_past(self.pick(_GENERAL_VERBS))} {self.adverb()}, {_ing(self.pick(self.lex['verbs']))} {self.plural_np()}."
        if k == 6:  # event, sentiment-laden
            if self.pos:
                return f"Soon the {n2} brought {self.pick(_POS_NOUNS)} to everyone {self.pp()}."
            return f"Suddenly the {n2} caused {self.pick(_NEG_NOUNS)} {self.pp()}."
        if k == 7:  # a second character reacts
            fam = self.pick(_FAMILY)
            return f"{self.his.capitalize()} {fam} said the {n2} looked {self.mood_adj()}."
        if k == 8:  # present tense in dialogue
            v = _third(self.pick(self.lex["verbs"]))
            fam = _plural(self.pick(_FAMILY))
            return f'"My {fam} say the {n2} {v} {self.pick(_PREPS)} here," said {self.friend}.'
        weather = self.pick(_TOPIC_LEXICON["weather"]["adjs"])
        return f"The {weather} {self.pick(_TIMES)} made the {self.place} feel {self.mood_adj()}."

    def ending(self) -> str:
        h, k = self.hero, self.rng.integers(5)
        if self.pos:
            if k == 0:
                return f"In the end, {h} felt {self.feel()} and {self.feel()}."
            if k == 1:
                return f"It was the most {self.mood_adj()} {self.pick(_TIMES)} of {self.his} life."
            if k == 2:
                return f"{h} and {self.friend} smiled, because everything was {self.mood_adj()}."
            if k == 3:
                adj = self.mood_adj()
                return f'"Let us come back tomorrow," said {h} with {_article(adj)} {adj} smile.'
            return f"From that day on, {h} loved the {self.place} even more."
        if k == 0:
            return f"In the end, {h} felt {self.feel()} and {self.feel()}."
        if k == 1:
            return f"It was the most {self.mood_adj()} {self.pick(_TIMES)} of {self.his} life."
        if k == 2:
            return f"{h} went home alone, and nothing felt right."
        if k == 3:
            return f'"I never want to see the {self.place} again," said {h}.'
        return f"From that day on, {h} stayed away from the {self.place}."

    def story(self) -> Story:
        sents = [self.opening(), self.key()]
        sents += [self.middle() for _ in range(int(self.rng.integers(0, 4)))]
        sents.append(self.ending())
        text = " ".join(s[0].upper() + s[1:] for s in sents)
        # the key sentence always has noun and verb verbatim; noun2 only when a middle used it
        keywords = tuple(
            k for k in (self.noun, self.verb, self.noun2) if re.search(rf"\b{re.escape(k)}\b", text)
        )
        return Story(text, self.topic, "positive" if self.pos else "negative", keywords)


def _iter_stories(seed: int) -> Iterator[Story]:
    """An endless stream of stories from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    while True:
        topic = TOPICS[int(rng.integers(len(TOPICS)))]
        sentiment = SENTIMENTS[int(rng.integers(2))]
        yield _StoryWriter(rng, topic, sentiment).story()


def generate_stories(n: int, seed: int = 0) -> list[Story]:
    """``n`` stories drawn from ``numpy.random.default_rng(seed)``; topics and sentiments
    are drawn uniformly. The same ``(n, seed)`` always gives the same stories, and the
    first ``k`` stories of ``generate_stories(n, seed)`` equal ``generate_stories(k, seed)``.

    Raises:
        InvalidArgument: if ``n`` is negative.
    """
    if int(n) != n or n < 0:
        raise InvalidArgument(f"n must be a non-negative integer, got {n!r}.")
    return list(itertools.islice(_iter_stories(seed), int(n)))


def _bucket(text: str) -> int:
    return zlib.crc32(text.encode("utf-8")) % 8


# A story's split is fixed by a hash of its text: train takes buckets 0-5, valid 6,
# test 7; so no held-out text can ever be a train text, whatever the seeds. Each split
# reads chunks of a fixed size from streams seeded in turn by the split's seed, so the
# first k stories of a split do not depend on how many are asked for.
_SPLIT_BUCKETS = {"train": frozenset(range(6)), "valid": frozenset({6}), "test": frozenset({7})}
_SPLIT_CHUNK = {"train": 40_000, "valid": 4_000, "test": 4_000}


@functools.lru_cache(maxsize=16)
def _split(split: str, n: int) -> tuple[Story, ...]:
    keep = _SPLIT_BUCKETS[split]
    out: list[Story] = []
    seeds = np.random.default_rng(_SPLIT_SEED[split])
    while len(out) < n:
        chunk = itertools.islice(_iter_stories(int(seeds.integers(2**31))), _SPLIT_CHUNK[split])
        for story in chunk:
            if _bucket(story.text) in keep:
                out.append(story)
                if len(out) == n:
                    break
    return tuple(out)


def corpus(split: str = "train", n: int | None = None) -> list[Story]:
    """The stories of a fixed split: ``"train"``, ``"valid"`` or ``"test"``.

    Each split has its own fixed seed, and a story's split is also fixed by a hash of
    its text, so held-out stories never equal a train story. ``n`` defaults to 20,000
    stories for train and 500 for valid and test. Results are cached per process.

    Raises:
        UnknownName: for an unknown split.
        InvalidArgument: if ``n`` is negative.
    """
    if split not in _SPLIT_SEED:
        raise unknown("corpus split", split, SPLITS)
    if n is None:
        n = _SPLIT_DEFAULT_N[split]
    if int(n) != n or n < 0:
        raise InvalidArgument(f"n must be a non-negative integer, got {n!r}.")
    return list(_split(split, int(n)))


def _sentences(text: str) -> list[str]:
    # split after . ! ? (and a closing quote), keeping the quote with its sentence
    parts, start = [], 0
    for m in re.finditer(r'[.!?]"?(\s+(?=[A-Z"])|$)', text):
        parts.append(text[start : m.end()].strip())
        start = m.end()
    return [p for p in parts if p]


def prompts(
    split: str = "test", n: int = 100, seed: int | None = None, *, min_words: int = 9
) -> list[tuple[str, dict[str, Any]]]:
    """Prompts drawn from held-out stories: the first sentence of a story, or the first two
    when the first has fewer than ``min_words`` words (prompts are roughly 8-20 words).

    Returns a list of ``(prompt, meta)`` where ``meta`` holds ``topic``, ``sentiment``,
    ``keywords`` (a tuple) and ``story`` (the full text). With ``seed=None`` the first
    ``n`` stories of the split are used in order; otherwise ``n`` stories are drawn
    without replacement by ``numpy.random.default_rng(seed)`` from a pool of
    ``max(n, default split size)`` stories.

    Raises:
        UnknownName: for an unknown split.
        InvalidArgument: if ``n`` is negative.
    """
    if int(n) != n or n < 0:
        raise InvalidArgument(f"n must be a non-negative integer, got {n!r}.")
    if split not in _SPLIT_SEED:
        raise unknown("corpus split", split, SPLITS)
    pool = corpus(split, max(int(n), _SPLIT_DEFAULT_N[split]))
    if seed is None:
        stories = pool[: int(n)]
    else:
        idx = np.random.default_rng(seed).choice(len(pool), size=int(n), replace=False)
        stories = [pool[int(i)] for i in idx]
    out = []
    for s in stories:
        sents = _sentences(s.text)
        prompt = sents[0]
        if len(prompt.split()) < min_words and len(sents) > 1:
            prompt = f"{prompt} {sents[1]}"
        meta = {"topic": s.topic, "sentiment": s.sentiment, "keywords": s.keywords, "story": s.text}
        out.append((prompt, meta))
    return out


def vocabulary(stories: list[Story]) -> set[str]:
    """The set of word types (lower-cased alphabetic tokens) used by ``stories``."""
    words: set[str] = set()
    for s in stories:
        words.update(re.findall(r"[a-z]+", s.text.lower()))
    return words
