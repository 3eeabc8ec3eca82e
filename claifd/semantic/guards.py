"""Guards: what a similar prompt must also share before its answer is served.

An embedding says two prompts are about the same thing; it does not say they
ask the same thing. Static and n-gram embeddings score "What is 2+2?" and
"What is 2+3?" above 0.9, a swapped "convert 100 F to C" / "100 C to F" at
1.0, and "buy" next to "sell" as neighbours. So a candidate above the
threshold is served only if every guard passes; each guard is a plain,
explainable rule, and `check` names the first one that fails (counted in
`claif cache stats` as `rejected_by_guard`).

    numbers      the same numbers and arithmetic operators, in the same order
    units        the same units and currencies, in the same order
    quoted       the same quoted strings and `inline code`
    identifiers  the same code identifiers (snake_case, camelCase, dotted, calls)
    urls         the same URLs, paths and e-mail addresses
    negation     the same number of negations (not, never, n't, without, ...)
    entities     the same named entities (capitalised words, languages, single
                 letters) in the same order
    order        the same content words in the same order, when both use the same
                 ones ("rent or buy" is not "buy or rent")
    contrast     no word of a contrasting pair on one side with its partner on
                 the other (buy/sell, before/after, max/min, ...)
    length       word counts within a ratio of 2 (a short prompt is not a long one)
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["GUARDS", "check", "Features", "FILLER"]

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+(?:[.,]\d+)*")
_NUMBER_OR_OP = re.compile(r"\d+(?:[.,]\d+)*|(?<=[\d\s])[-+*/^%=<>](?=[\s\d(])|[x×÷]\s*(?=\d)")
_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”|`([^`]+)`|(?<![A-Za-z])'([^']+)'(?![A-Za-z])")
_URL = re.compile(r"[a-z][a-z0-9+.\-]*://\S+|www\.\S+|\b[\w.+\-]+@[\w\-]+\.[\w.\-]+|(?:~|\.{1,2})?/[\w.\-/]+", re.I)
_IDENT = re.compile(
    r"\b[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+\b"  # dotted: os.path.join
    r"|\b[a-z0-9]+(?:_[a-z0-9]+)+\b"  # snake_case
    r"|\b[a-z]+(?:[A-Z][a-z0-9]*)+\b"  # camelCase
    r"|\b[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)+\b"  # PascalCase
    r"|\b[A-Za-z_][A-Za-z0-9_]*(?=\()"  # a call: len(
)
_NEGATIONS = frozenset({
    "not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "nowhere", "without", "cannot",
    "isn't", "aren't", "wasn't", "weren't", "don't", "doesn't", "didn't", "won't", "wouldn't", "can't",
    "couldn't", "shouldn't", "hasn't", "haven't", "hadn't", "mustn't", "avoid", "except",
})
_UNITS = frozenset({
    "celsius", "fahrenheit", "kelvin", "km", "kilometers", "kilometres", "meters", "metres",
    "cm", "mm", "mi", "mile", "miles", "ft", "feet", "foot", "inch", "inches", "yd", "yards", "kg",
    "kilograms", "grams", "lb", "lbs", "pounds", "oz", "ounces", "liters", "litres", "ml", "gallons",
    "gallon", "cups", "cup", "mph", "kph", "kmh", "usd", "eur", "gbp", "jpy", "cny", "inr", "chf", "dollars",
    "euros", "yen", "bytes", "kb", "mb", "gb", "tb", "kib", "mib", "gib", "seconds", "minutes", "hours", "days",
    "weeks", "months", "years", "ms", "hz", "khz", "mhz", "ghz", "kw", "kwh", "volts",
    "percent", "%", "degrees", "radians", "bits", "bit", "byte",
})
_LANGUAGES = frozenset({
    "english", "french", "spanish", "german", "italian", "portuguese", "dutch", "russian", "chinese", "mandarin",
    "japanese", "korean", "arabic", "hindi", "turkish", "polish", "swedish", "greek", "hebrew", "latin",
    "python", "java", "javascript", "typescript", "rust", "go", "golang", "ruby", "php", "c++", "c#", "kotlin",
    "swift", "scala", "haskell", "perl", "sql", "bash", "html", "css", "r", "julia", "lua", "elixir", "erlang",
})
_PAIRS = [
    ("buy", "sell"), ("buying", "selling"), ("junior", "senior"), ("closer", "farther"), ("near", "far"),
    ("before", "after"), ("max", "min"), ("maximum", "minimum"), ("largest", "smallest"), ("biggest", "smallest"),
    ("bigger", "smaller"), ("larger", "smaller"), ("more", "less"), ("more", "fewer"), ("most", "least"),
    ("increase", "decrease"), ("add", "remove"), ("insert", "delete"), ("encode", "decode"), ("encrypt", "decrypt"),
    ("compress", "decompress"), ("serialize", "deserialize"), ("import", "export"), ("upload", "download"),
    ("push", "pull"), ("open", "close"), ("start", "stop"), ("enable", "disable"), ("true", "false"), ("yes", "no"),
    ("up", "down"), ("left", "right"), ("north", "south"), ("east", "west"), ("hot", "cold"), ("warm", "cool"),
    ("high", "low"), ("higher", "lower"), ("highest", "lowest"), ("fast", "slow"), ("faster", "slower"),
    ("fastest", "slowest"), ("cheap", "expensive"), ("best", "worst"),
    ("better", "worse"), ("good", "bad"), ("pros", "cons"), ("advantages", "disadvantages"), ("benefits", "risks"),
    ("first", "last"), ("early", "late"), ("earlier", "later"), ("old", "new"), ("older", "newer"),
    ("oldest", "newest"), ("young", "old"), ("ascending", "descending"), ("asc", "desc"), ("input", "output"),
    ("client", "server"), ("read", "write"), ("send", "receive"), ("win", "lose"), ("winner", "loser"),
    ("profit", "loss"), ("gain", "loss"), ("positive", "negative"), ("plus", "minus"), ("above", "below"),
    ("over", "under"), ("inside", "outside"), ("internal", "external"), ("public", "private"),
    ("synchronous", "asynchronous"), ("sync", "async"), ("uppercase", "lowercase"), ("upper", "lower"),
    ("male", "female"), ("men", "women"), ("day", "night"), ("morning", "evening"), ("summer", "winter"),
    ("spring", "autumn"), ("always", "never"), ("all", "none"), ("allow", "deny"), ("accept", "reject"),
    ("include", "exclude"), ("join", "leave"), ("lend", "borrow"), ("give", "take"), ("inhale", "exhale"),
    ("legal", "illegal"), ("valid", "invalid"), ("safe", "unsafe"), ("healthy", "unhealthy"), ("rise", "fall"),
    ("long", "short"), ("longer", "shorter"), ("longest", "shortest"), ("heavy", "light"), ("heavier", "lighter"),
    ("wide", "narrow"), ("thick", "thin"), ("strong", "weak"), ("stronger", "weaker"), ("rich", "poor"),
    ("love", "hate"), ("like", "dislike"), ("agree", "disagree"), ("success", "failure"), ("mean", "median"),
    ("simple", "complex"), ("easy", "hard"), ("easiest", "hardest"), ("beginner", "advanced"), ("to", "from"),
    ("first", "second"), ("second", "third"), ("install", "uninstall"), ("create", "delete"), ("make", "delete"),
    ("key", "value"), ("keys", "values"), ("with", "without"),
]
_CONTRAST: dict[str, frozenset[str]] = {}
for _a, _b in _PAIRS:
    _CONTRAST[_a] = _CONTRAST.get(_a, frozenset()) | {_b}
    _CONTRAST[_b] = _CONTRAST.get(_b, frozenset()) | {_a}
# Words that carry little meaning: left out of the word-order comparison (and
# weighted down by the hashed-ngrams embedder).
FILLER = frozenset(
    "a an the is are was were be been of to in on at for by with and or what how why which who whom whose do does "
    "did can could would should will i you we they it this that these those my your me please tell give explain "
    "show".split()
)
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n)\s*[\"'(]?([A-Z][A-Za-z'\-]*)")
_LENGTH_RATIO = 2.0


class Features:
    """What the guards compare, extracted once per prompt (kept with an indexed prompt)."""

    __slots__ = ("words", "numbers", "units", "quoted", "identifiers", "urls", "negations", "entities")

    def __init__(self, text: str) -> None:
        urls = _URL.findall(text)
        rest = _URL.sub(" ", text)
        quoted = ["".join(groups) for groups in _QUOTED.findall(rest)]
        words = _WORD.findall(rest)
        lower = [w.lower() for w in words]
        self.words = lower
        self.urls = sorted(u.rstrip(".,;:!?)").lower() for u in urls)
        self.quoted = sorted(quoted)
        self.identifiers = sorted(set(_IDENT.findall(_QUOTED.sub(" ", rest))))
        self.numbers = [n.replace(",", "").strip() for n in _NUMBER_OR_OP.findall(rest)]
        self.units = [w for w in lower if w in _UNITS and not w.isdigit()]
        self.negations = sum(1 for w in lower if w in _NEGATIONS or w.endswith("n't"))
        starts = {m.start(1) for m in _SENTENCE_START.finditer(rest)}
        # Words capitalised in the text (not for starting a sentence), single
        # capital letters, and language names: what `entities` compares.
        marked = set()
        for m in _WORD.finditer(rest):
            w = m.group(0)
            if w == "I":
                continue
            if w.lower() in _LANGUAGES or (len(w) == 1 and w.isupper()) or (w[0].isupper() and m.start() not in starts):
                marked.add(w.lower())
        self.entities = marked


def _same(field: str) -> Callable[[Features, Features], bool]:
    """A guard that passes when both prompts have the same `field`."""

    def passes(q: Features, c: Features) -> bool:
        return bool(getattr(q, field) == getattr(c, field))

    return passes


def _same_entities(q: Features, c: Features) -> bool:
    """The same entities in the same order, whichever side capitalised them."""
    marked = q.entities | c.entities
    if not marked:
        return True
    return [w for w in q.words if w in marked] == [w for w in c.words if w in marked]


def _no_contrast(q: Features, c: Features) -> bool:
    """No word swapped for its partner, and no pair whose two words swapped places."""
    only_c = set(c.words) - set(q.words)
    for word in set(q.words) - set(c.words):
        partners = _CONTRAST.get(word)
        if partners and partners & only_c:
            return False
    qi = {w: i for i, w in enumerate(q.words)}
    ci = {w: i for i, w in enumerate(c.words)}
    for word in qi.keys() & ci.keys():
        for other in _CONTRAST.get(word, ()):
            if other in qi and other in ci and (qi[word] < qi[other]) != (ci[word] < ci[other]):
                return False
    return True


def _same_order(q: Features, c: Features) -> bool:
    qc = [w for w in q.words if w not in FILLER]
    cc = [w for w in c.words if w not in FILLER]
    if len(qc) < 2 or sorted(qc) != sorted(cc):
        return True
    return qc == cc


def _similar_length(q: Features, c: Features) -> bool:
    a, b = max(1, len(q.words)), max(1, len(c.words))
    return max(a, b) / min(a, b) <= _LENGTH_RATIO


GUARDS: list[tuple[str, Callable[[Features, Features], bool]]] = [
    ("numbers", _same("numbers")),
    ("units", _same("units")),
    ("quoted", _same("quoted")),
    ("identifiers", _same("identifiers")),
    ("urls", _same("urls")),
    ("negation", _same("negations")),
    ("entities", _same_entities),
    ("order", _same_order),
    ("contrast", _no_contrast),
    ("length", _similar_length),
]


def check(query: Features, candidate: Features) -> str | None:
    """None if every guard passes, else the name of the first that fails."""
    for name, passes in GUARDS:
        if not passes(query, candidate):
            return name
    return None
