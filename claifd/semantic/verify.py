"""The verifier: after the embedding matched and the guards passed, do the
two prompts say the same thing, word for word?

Embeddings score a prompt that swaps one word ("count users per country" /
"count orders per country", "zoom in" / "zoom out", "$100" / "€100",
"second largest" / "largest") as near-identical. The verifier aligns the
prompts' content words: each content word on either side must match one on
the other side, by

- the same lemma (a light lemmatizer: plurals, -ing, -ed, irregular verbs,
  contractions expanded);
- a synonym (a small table, and phrases such as "turn on" = "enable");
- a typo (one edit in words of five letters or more, or two neighbours swapped).

Words that carry no question of their own may go unmatched: function words,
politeness ("please", "could you"), light verbs and generic nouns ("tell",
"show", "give", "way", "example").

Some words never match anything but themselves, whatever an embedding or a
typo distance says: numbers and number words, ordinals, superlatives,
comparatives, quantifiers and the modifiers "second", "not", "without",
"except", "only"; verb particles (in/out, on/off, up/down); question words
(when/why/how...); "will"; currency symbols, operators and mixed-case
units (Mbps/MBps). A particle on one side against its opposite on the
other (in/out, on/off, up/down, over/under) is a rejection. Two words that differ by a contrasting prefix (en/de, in/ex,
im/ex, inc/dec, pre/post, over/under, min/max, up/down, un-, dis-, de-) are
a rejection of their own, and so are the same content words in another
order (roles swapped: "who defeated Napoleon" / "who did Napoleon defeat").

`verify` returns None when the prompts align, else the reason (counted in
`claif cache stats` under `rejected_by_guard`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["verify", "typo_fixes", "corrected", "Words", "REASONS", "Known"]

REASONS = ("unmatched_word", "changed_modifier", "prefix_contrast", "changed_particle", "changed_question",
           "swapped_roles")

_TOKEN = re.compile(r"[$€£¥₹]|[=!<>&|+*/%^~-]{2,}|[<>=+*/%^&|]|[A-Za-z][A-Za-z'\-]*|\d+(?:[.,]\d+)*")
_CONTRACTIONS = [
    (re.compile(r"\b(can)'t\b", re.I), r"\1 not"), (re.compile(r"\bwon't\b", re.I), "will not"),
    (re.compile(r"n't\b", re.I), " not"), (re.compile(r"'re\b", re.I), " are"), (re.compile(r"'ve\b", re.I), " have"),
    (re.compile(r"'ll\b", re.I), " will"), (re.compile(r"'d\b", re.I), " did"), (re.compile(r"'m\b", re.I), " am"),
    (re.compile(r"\b(what|where|who|how|why|when|that|it|there|here|which)'s\b", re.I), r"\1 is"),
]
# Said in two words, meant as one.
_PHRASES = [
    (re.compile(r"\bturn(?:ing|ed|s)? on\b", re.I), "enable"), (re.compile(r"\bswitch(?:ing|ed|es)? on\b", re.I), "enable"),
    (re.compile(r"\bturn(?:ing|ed|s)? off\b", re.I), "disable"), (re.compile(r"\bswitch(?:ing|ed|es)? off\b", re.I), "disable"),
    (re.compile(r"\b(?:log|sign)(?:ging|ged|s)? in(?:to)?\b", re.I), "login"),
    (re.compile(r"\b(?:log|sign)(?:ging|ged|s)? out\b", re.I), "logout"),
    (re.compile(r"\bcame down\b|\bcome down\b", re.I), "fall"),
    (re.compile(r"\bwent up\b|\bgo up\b|\bgoes up\b", re.I), "rise"),
    (re.compile(r"\bwent down\b|\bgo down\b|\bgoes down\b", re.I), "fall"),
    (re.compile(r"\be-mail\b", re.I), "email"), (re.compile(r"\bworst-case\b", re.I), "worst case"),
    (re.compile(r"\bhow many\b|\bhow much\b|\bnumber of\b", re.I), "quantity"),
    (re.compile(r"\bcapital city\b", re.I), "capital"),
    (re.compile(r"\bregular expression\b", re.I), "regex"),
    (re.compile(r"\brunning time\b", re.I), "time complexity"),
]
_IRREGULAR = {
    "wrote": "write", "written": "write", "writes": "write", "writing": "write", "built": "build", "fell": "fall",
    "fallen": "fall", "ran": "run", "run": "run", "went": "go", "gone": "go", "did": "do", "done": "do", "does": "do",
    "made": "make", "bought": "buy", "sold": "sell", "took": "take", "taken": "take", "gave": "give", "given": "give",
    "saw": "see", "seen": "see", "knew": "know", "known": "know", "got": "get", "gotten": "get", "found": "find",
    "thought": "think", "began": "begin", "begun": "begin", "broke": "break", "broken": "break", "chose": "choose",
    "chosen": "choose", "drew": "draw", "drawn": "draw", "ate": "eat", "eaten": "eat", "grew": "grow",
    "grown": "grow", "has": "have", "had": "have", "is": "be", "are": "be", "was": "be", "were": "be", "am": "be",
    "been": "be", "children": "child", "people": "person", "men": "man", "women": "woman", "feet": "foot",
    "teeth": "tooth", "mice": "mouse", "data": "data", "indices": "index", "matrices": "matrix", "won": "win",
    "lost": "lose", "beat": "beat", "beaten": "beat", "meant": "mean", "said": "say", "told": "tell", "led": "lead",
    "left": "left", "rose": "rise", "risen": "rise", "spoke": "speak", "spoken": "speak", "froze": "freeze",
    "frozen": "freeze", "lay": "lie", "paid": "pay", "sent": "send", "spent": "spend", "understood": "understand",
}
_SYNONYMS = [
    {"make", "create", "generate", "produce"}, {"remove", "delete", "erase", "rm"}, {"big", "large"},
    {"biggest", "largest"}, {"bigger", "larger"}, {"compose", "write", "draft"}, {"author", "writer"},
    {"rich", "high"}, {"common", "usual", "typical", "main"}, {"signs", "symptoms", "sign", "symptom"},
    {"explain", "describe", "tell", "show"}, {"change", "convert", "turn"}, {"load", "import"},
    {"rise", "increase"}, {"fast", "quick"}, {"default", "standard"}, {"can", "could", "may"},
    {"definition", "meaning", "mean", "define"}, {"cost", "price"}, {"car", "automobile"},
    {"begin", "start"}, {"end", "finish"}, {"buy", "purchase"}, {"fix", "repair"}, {"answer", "reply"},
    {"kilometer", "kilometre", "km"}, {"meter", "metre"}, {"color", "colour"}, {"summarize", "summarise"},
    {"every", "all"}, {"differ", "difference"}, {"travel", "speed"}, {"boil", "boiling"}, {"kubernetes", "k8s"},
    {"display", "show"}, {"obtain", "get", "retrieve", "fetch"}, {"locate", "find"}, {"utilize", "utilise", "use"},
    {"assist", "help"}, {"require", "need"}, {"little", "small", "tiny"}, {"issue", "problem"},
    {"movie", "film"}, {"kid", "child"}, {"talk", "speak"}, {"glad", "happy"}, {"correct", "right"},
    {"incorrect", "wrong"}, {"smart", "intelligent", "clever"}, {"difficult", "hard"}, {"simple", "easy"},
    {"choose", "select", "pick"}, {"modify", "alter", "change", "edit"}, {"construct", "build"},
    {"verify", "check"}, {"enhance", "improve"}, {"halt", "stop"}, {"application", "app", "program"},
    {"picture", "image", "photo"}, {"shop", "store"}, {"house", "home"}, {"sofa", "couch"},
    {"journey", "trip"}, {"doctor", "physician"}, {"lawyer", "attorney"}, {"quickly", "fast"},
    {"cheap", "inexpensive"}, {"purpose", "goal", "aim"}, {"method", "approach", "technique"},
    {"mistake", "error"}, {"test", "exam"}, {"guide", "tutorial"}, {"explanation", "overview"},
    {"benefit", "advantage"}, {"drawback", "disadvantage", "downside"}, {"idea", "suggestion", "tip"},
    {"usage", "use"}, {"hint", "tip"}, {"near", "close"}, {"large", "huge"}, {"shut", "close"},
    {"sick", "ill"}, {"center", "centre", "middle"}, {"optimise", "optimize"}, {"analyse", "analyze"},
    {"organise", "organize"}, {"behaviour", "behavior"}, {"favourite", "favorite"}, {"grey", "gray"},
    {"licence", "license"}, {"cancel", "abort"}, {"launch", "start"}, {"terminate", "end", "kill"},
    {"folder", "directory", "dir"}, {"file", "document"}, {"password", "passphrase"}, {"pc", "computer"},
    {"laptop", "notebook"}, {"phone", "telephone", "cellphone", "smartphone"}, {"database", "db"},
    {"repository", "repo"}, {"configuration", "config", "settings", "setting"}, {"parameter", "param"},
    {"argument", "arg"}, {"variable", "var"}, {"function", "func"}, {"documentation", "docs", "doc"},
]
_SYNONYM_OF: dict[str, frozenset[str]] = {}
for _group in _SYNONYMS:
    for _w in _group:
        _SYNONYM_OF[_w] = _SYNONYM_OF.get(_w, frozenset()) | frozenset(_group)

# Never needed on the other side.
_FUNCTION = frozenset(
    "a an the is are was were be been being am of to at for by with and or as it its this that these those there "
    "here i me my mine you your yours we our us they them their he she his her do does did done have has had "
    "will would shall should can could may might must please kindly thanks thank just really also so then than "
    "about into onto from within via per if whether".split()
)
_LIGHT = frozenset(
    "tell show give explain describe get let help know want need like make making use using way ways thing things "
    "write compose create provide find convert list calculate compute recommend suggest go able "
    "possible anyone someone somebody guy guys folks "
    "something example examples info information detail details question questions answer possible "
    "wondering wonder curious say me quick quickly briefly simple simply exactly actually basically "
    "hey hi hello ok okay dear sir madam".split()
)
# Compared as themselves only.
_NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million "
    "billion trillion half quarter twice thrice double triple single dozen".split()
)
_MODIFIERS = frozenset(
    "first second third fourth fifth sixth seventh eighth ninth tenth last next previous final only not no never "
    "without except unless none nothing nobody neither nor all every each any some many much few more most less "
    "least fewer fewest several both either other another same different top bottom best worst better worse "
    "average median minimum maximum min max always sometimes often rarely twice again distinct unique will shall "
    "total whole partial full empty".split()
)
# A particle matters against its opposite: "zoom in" is not "zoom out" (a lone "in" is a preposition).
_PARTICLE_OPPOSITE = {"in": "out", "out": "in", "on": "off", "off": "on", "up": "down", "down": "up",
                      "over": "under", "under": "over", "into": "out", "onto": "off"}
_PARTICLES = frozenset(_PARTICLE_OPPOSITE)
_QUESTION = {"what": "what", "which": "what", "when": "when", "where": "where", "why": "why", "who": "who",
             "whom": "who", "whose": "whose", "how": "how"}
_CONTRAST_PREFIXES = [("en", "de"), ("in", "ex"), ("im", "ex"), ("inc", "dec"), ("pre", "post"), ("over", "under"),
                      ("min", "max"), ("up", "down"), ("en", "dis"), ("ap", "disap"), ("", "un"), ("", "dis"),
                      ("", "de"), ("", "non"), ("", "anti"), ("", "in"), ("", "im"), ("", "ir"), ("", "il"),
                      ("", "mis"), ("", "re")]
_SUPERLATIVE = re.compile(r"^[a-z]{2,}(?:est|iest)$")
_NOT_SUPERLATIVE = frozenset({"test", "best", "rest", "nest", "west", "interest", "request", "guest", "forest",
                              "honest", "latest", "contest", "protest", "digest", "harvest", "manifest", "suggest",
                              "invest", "quest", "chest", "vest", "pest", "crest", "arrest", "modest", "earnest"})
_COMPARATIVE = frozenset("bigger smaller larger higher lower longer shorter faster slower cheaper older newer younger "
                         "stronger weaker heavier lighter earlier later greater easier harder wider narrower deeper "
                         "warmer colder hotter cooler safer riskier".split())


class Words:
    """A prompt as the verifier compares it: content words (lemmas, and
    the protected ones as they are) in order."""

    __slots__ = ("content", "raw", "protected", "particles", "questions", "symbols")

    def __init__(self, text: str) -> None:
        for pattern, replacement in _CONTRACTIONS:
            text = pattern.sub(replacement, text)
        for pattern, replacement in _PHRASES:
            text = pattern.sub(replacement, text)
        self.content: list[str] = []  # lemmas: may align with synonyms and typos
        self.raw: list[str] = []  # the same words as written (for typos)
        self.protected: list[str] = []  # only themselves
        self.particles: list[str] = []
        self.questions: set[str] = set()
        self.symbols: list[str] = []
        for token in _TOKEN.findall(text):
            if not token[0].isalnum():
                self.symbols.append(token)
                continue
            if token[0].isdigit():
                self.protected.append(token.replace(",", ""))
                continue
            if any(c.isupper() for c in token[1:]) and not token.isupper() or token.isupper() and len(token) > 1 \
                    and any(c.islower() for c in token):
                self.protected.append(token)  # mixed case: MBps is not Mbps
                continue
            word = token.lower().strip("'-")
            if not word:
                continue
            if word in _QUESTION:
                self.questions.add(_QUESTION[word])
                continue
            if word in _PARTICLES:
                self.particles.append(word)
                continue
            if word in _NUMBER_WORDS or word in _MODIFIERS or word in _COMPARATIVE or (
                    _SUPERLATIVE.match(word) and word not in _NOT_SUPERLATIVE):
                self.protected.append(word)
                continue
            if word in _FUNCTION:
                continue
            self.content.append(lemma(word))
            self.raw.append(word)


def lemma(word: str) -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        stem = word[:-3]
        return stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] else stem
    if len(word) > 4 and word.endswith("ed"):
        stem = word[:-2]
        return stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] else stem
    return word


def _stem(word: str) -> str:
    """A lemma with a trailing e dropped (write/writ, create/creat): for comparing lemmas of verbs."""
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def _typo(a: str, b: str) -> bool:
    """One edit or one swap of neighbours apart, in words of five letters or more."""
    if min(len(a), len(b)) < 4 or abs(len(a) - len(b)) > 1 or a[0] != b[0] and a[:2] != b[:2][::-1]:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        swapped = len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
        return swapped or (len(diff) == 1 and len(a) >= 5)
    if min(len(a), len(b)) < 5:
        return False
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def _contrast(a: str, b: str) -> bool:
    """Do the two words differ by a contrasting prefix (encrypt/decrypt, install/uninstall)?"""
    for p, q in _CONTRAST_PREFIXES:
        for x, y in ((a, b), (b, a)):
            if x.startswith(p) and y.startswith(q):
                rest_x, rest_y = x[len(p):], y[len(q):]
                if len(rest_x) >= 3 and rest_x == rest_y:
                    return True
    return False


Known = Callable[[str], bool]


def _typo_of(raw: str, others_raw: list[str], known: Known | None) -> str | None:
    """The word of `others_raw` that `raw` is a typo of, or None. With a
    vocabulary (`known`), two words it knows are never each other's typo
    (county/country, desert/dessert... are words, not slips)."""
    for other in others_raw:
        if _typo(raw, other) and not _contrast(raw, other) and not (
                known is not None and known(raw) and known(other)):
            return other
    return None


def _aligns(word: str, raw: str, others: list[str], others_raw: list[str], known: Known | None = None) -> str | None:
    """How `word` (its lemma; `raw` as written) matches one of `others`
    ("same", "synonym", "typo"), or None."""
    if word in others:
        return "same"
    synonyms = _SYNONYM_OF.get(word)
    stem = _stem(word)
    for other in others:
        if _stem(other) == stem or (synonyms is not None and other in synonyms):
            return "synonym"
    return "typo" if _typo_of(raw, others_raw, known) is not None else None


def typo_fixes(new: Words, cached: Words, known: Known | None = None) -> dict[str, str]:
    """The words of `new` that are typos of words of `cached` (word -> the
    word meant): the embedding of a prompt with slips in it is compared once
    they are corrected."""
    fixes = {}
    for word, raw in zip(new.content, new.raw):
        if word in _LIGHT or raw in _LIGHT or _aligns(word, raw, cached.content, [], known) is not None:
            continue  # (no typo: light, or the same word or a synonym)
        meant = _typo_of(raw, cached.raw, known)
        if meant is not None:
            fixes[raw] = meant
    return fixes


def corrected(text: str, fixes: dict[str, str]) -> str:
    """`text` with each typo of `fixes` replaced by the word meant."""
    for slip, meant in fixes.items():
        text = re.sub(rf"\b{re.escape(slip)}\b", meant, text, flags=re.I)
    return text


def verify(new: Words, cached: Words, known: Known | None = None) -> str | None:
    """None when the two prompts align word for word, else why not;
    `known`: the embedder's vocabulary, if it has one (see `_typo_of`)."""
    if new.symbols != cached.symbols:
        return "changed_modifier"
    if sorted(new.protected) != sorted(cached.protected):
        return "changed_modifier"
    only_new = set(new.particles) - set(cached.particles)
    only_cached = set(cached.particles) - set(new.particles)
    if any(_PARTICLE_OPPOSITE[p] in only_cached for p in only_new):
        return "changed_particle"
    if new.questions and cached.questions and new.questions != cached.questions:
        return "changed_question"
    for side, other in ((new, cached), (cached, new)):
        for word, raw in zip(side.content, side.raw):
            if word in _LIGHT or raw in _LIGHT:
                continue
            if _aligns(word, raw, other.content, other.raw, known) is None:
                if any(_contrast(raw, o) for o in other.raw):
                    return "prefix_contrast"
                return "unmatched_word"
    # The same words in another order: who did what to whom may have turned
    # round ("who defeated Napoleon" / "who did Napoleon defeat").
    a = [_stem(w) for w in new.content if w not in _LIGHT]
    b = [_stem(w) for w in cached.content if w not in _LIGHT]
    if len(a) > 1 and sorted(a) == sorted(b) and a != b:
        return "swapped_roles"
    return None
