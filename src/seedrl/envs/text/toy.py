"""Toy text worlds with exact ground truth (no downloads needed).

Every world has ``examples(n, seed)`` (deterministic dicts: ``prompt``, the
ideal continuation ``reference`` so that ``prompt + reference`` is the
target text, plus world fields), ``reward_fn(...)`` (a :class:`RewardFn`),
``score(completion, example)`` and ``corpus(n, seed)`` (texts for training a
tokenizer: every vocabulary word in both of its forms, then ``n``
prompt + reference texts). :func:`build_toy_assets` (``seedrl.envs.text.assets``)
makes a tokenizer and tiny models for a world.

FACTS world (``FactsWorld``). A document is a few facts about animals,
``"the {colour} {animal} {relation} {object}."`` with relation one of
``lives in the`` (a place), ``eats`` (a food), ``likes the`` (a weather),
interleaved with filler sentences (``"the sky was clear."``). The reference
summary is the facts in document order, without the fillers. The checker
parses a summary into sentences (split at ``.`` and newlines, case and spacing
ignored); a sentence in the fact grammar is a *claim*, any other non-empty
sentence is *unparsed*. With ``D`` the document's facts::

    faithfulness = #(claims in D) / (#claims + #unparsed)      (0 if nothing is said)
    coverage     = #(distinct facts of D claimed) / #D
    f1           = 2 * faithfulness * coverage / (faithfulness + coverage)

An empty summary scores 0 (not a vacuous 1), so saying nothing is not a way
to be faithful; copying fillers or inventing facts lowers faithfulness. A
summary *hallucinates* when it claims at least one fact that is not in ``D``
(``FactScore.hallucinated``; unparsed sentences are not facts); the
hallucination rate of a set of summaries is the fraction that hallucinate.

Hallucinating references (``hallucination_rate=r``, default 0), the XSum
premise in miniature: references that state what the document does not
support, so that a summariser trained on them learns to. The world holds
"background knowledge": per animal a well-known fact (a relation and object,
:func:`well_known_fact`), and a set of ``round(12 r)`` *famous* animals (the
first ones of a fixed permutation; rate rounded to a multiple of 1/12). When the
document's first fact is about a famous animal and the document does not state
that animal's well-known fact, the reference adds it, about the same entity
(``the {colour} {animal} {relation} {object}.`` with the first fact's colour),
right after the first fact. Animals are drawn uniformly, so about ``r`` of the
references carry exactly one unsupported fact (a little less: those whose
document happens to state it). The trigger is visible in the document, so a
summariser learns it as a rule and hallucinates also when decoding greedily.
Documents are the same for every rate (the same random stream). Each example
keeps the clean summary in ``summary`` (the facts in document order) and the
training target in ``reference``; ``hallucinated_reference`` says which.

ARITHMETIC/STRING world (``ArithmeticWorld``). Prompts ``"12+7="``,
``"40-13="``, ``"6*7="`` (operands below ``10**max_digits``, subtraction
never negative) with reference ``"19"``; and ``"reverse: a b c ->"``,
``"copy: ... ->"``, ``"sort: ... ->"`` over space-separated letters with
reference ``" c b a"``. Scoring reads the completion up to its first newline
and drops whitespace. ``exact``: 1 if equal to the answer, else 0.
``partial``: matching positions / max(len(prediction), len(answer)),
numbers aligned at the last digit, strings at the first letter (a
prediction that is not an integer scores 0 on a numeric task).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from seedrl.rewards.base import CallableReward, RewardFn

__all__ = ["WORLDS", "ArithmeticWorld", "FactScore", "FactsWorld", "get_world"]

COLOURS = ("red", "blue", "green", "yellow", "black", "white", "brown", "gray")
ANIMALS = ("fox", "bird", "cat", "dog", "bear", "wolf", "frog", "owl", "mouse", "deer", "goat", "duck")
RELATIONS = {
    "lives in the": ("forest", "river", "desert", "cave", "meadow", "mountain", "lake", "swamp"),
    "eats": ("seeds", "berries", "grass", "insects", "nuts", "leaves", "worms", "apples"),
    "likes the": ("rain", "sun", "snow", "wind", "moon", "fog", "storm", "spring"),
}
#: per animal its "well-known" (relation, object): the world's background knowledge
WELL_KNOWN = {animal: (rel, RELATIONS[rel][(3 * i + 1) % 8])
              for i, (animal, rel) in enumerate(zip(ANIMALS, [r for _ in range(4) for r in RELATIONS]))}
#: the order in which animals become famous as hallucination_rate grows
FAME_ORDER = ("fox", "owl", "bear", "duck", "cat", "frog", "wolf", "bird", "deer", "goat", "dog", "mouse")
FILLERS = ("the sky was clear.", "it was a quiet day.", "nothing else happened.", "the air was cold.")
Fact = tuple[str, str, str, str]  # (colour, animal, relation, object)
_FACT_RE = re.compile(
    r"^(?:the )?(%s) (%s) (%s) (%s)$"
    % tuple("|".join(map(re.escape, xs)) for xs in (COLOURS, ANIMALS, RELATIONS, sorted({o for v in RELATIONS.values() for o in v})))
)


def fact_sentence(fact: Sequence[str]) -> str:
    return "the {} {} {} {}.".format(*fact)


def split_sentences(text: str) -> list[str]:
    """Lower-cased sentences (split at '.' and newlines), spacing collapsed, empties dropped."""
    parts = re.split(r"[.\n]", text.lower())
    return [s for s in (" ".join(p.split()) for p in parts) if s]


def parse_facts(text: str) -> tuple[list[Fact], list[str]]:
    """(claimed facts, unparsed sentences) of a text in the fact grammar."""
    facts, other = [], []
    for s in split_sentences(text):
        m = _FACT_RE.match(s)
        if m and m.group(4) in RELATIONS[m.group(3)]:
            facts.append(tuple(m.groups()))  # type: ignore[arg-type]
        else:
            other.append(s)
    return facts, other


def well_known_fact(colour: str, animal: str) -> Fact:
    """The world's background-knowledge fact about the ``colour animal`` entity."""
    rel, obj = WELL_KNOWN[animal]
    return (colour, animal, rel, obj)


@dataclass(frozen=True)
class FactScore:
    faithfulness: float
    coverage: float
    f1: float
    num_claims: int
    num_supported: int
    num_unparsed: int

    @property
    def num_unsupported(self) -> int:
        """Claimed facts that the document does not state."""
        return self.num_claims - self.num_supported

    @property
    def hallucinated(self) -> bool:
        """True when the summary claims at least one fact the document does not state."""
        return self.num_unsupported > 0


class FactsWorld:
    """Documents of random animal facts; summaries scored exactly (see the module docstring)."""

    name = "facts"
    template = "Summarize:\n{document}\nSummary:"
    metrics = ("faithfulness", "coverage", "f1")

    def __init__(self, min_facts: int = 2, max_facts: int = 4, max_fillers: int = 2,
                 hallucination_rate: float = 0.0) -> None:
        if not 1 <= min_facts <= max_facts:
            raise ValueError(f"need 1 <= min_facts <= max_facts, got {min_facts}, {max_facts}")
        if not 0.0 <= hallucination_rate <= 1.0:
            raise ValueError(f"hallucination_rate={hallucination_rate!r}: must be in [0, 1]")
        self.min_facts, self.max_facts, self.max_fillers = min_facts, max_facts, max_fillers
        self.hallucination_rate = float(hallucination_rate)
        self.famous = frozenset(FAME_ORDER[: int(round(len(ANIMALS) * self.hallucination_rate))])

    def hallucination(self, facts: Sequence[Fact]) -> Fact | None:
        """The unsupported fact a reference adds for a document of ``facts`` (module docstring), or None."""
        colour, animal = facts[0][0], facts[0][1]
        if animal not in self.famous:
            return None
        fact = well_known_fact(colour, animal)
        return None if fact in set(map(tuple, facts)) else fact

    def sample_facts(self, rng: np.random.Generator) -> list[Fact]:
        n = int(rng.integers(self.min_facts, self.max_facts + 1))
        facts: list[Fact] = []
        seen = set()
        while len(facts) < n:
            colour, animal = COLOURS[rng.integers(len(COLOURS))], ANIMALS[rng.integers(len(ANIMALS))]
            rel = list(RELATIONS)[rng.integers(len(RELATIONS))]
            if (colour, animal, rel) in seen:
                continue
            seen.add((colour, animal, rel))
            facts.append((colour, animal, rel, RELATIONS[rel][rng.integers(len(RELATIONS[rel]))]))
        return facts

    def examples(self, n: int, seed: int = 0) -> list[dict]:
        rng = np.random.default_rng(seed)
        out = []
        for i in range(n):
            facts = self.sample_facts(rng)
            sentences = [fact_sentence(f) for f in facts]
            for _ in range(int(rng.integers(0, self.max_fillers + 1))):
                sentences.insert(int(rng.integers(0, len(sentences) + 1)), FILLERS[rng.integers(len(FILLERS))])
            document = " ".join(sentences)
            summary = " ".join(fact_sentence(f) for f in facts)
            extra = self.hallucination(facts)
            target = summary if extra is None else " ".join(fact_sentence(f) for f in [facts[0], extra, *facts[1:]])
            out.append({
                "id": f"facts-{seed}-{i}", "document": document, "summary": summary,
                "facts": [list(f) for f in facts], "prompt": self.template.format(document=document),
                "reference": " " + target, "hallucinated_reference": extra is not None,
            })
        return out

    def check(self, summary: str, document: str) -> FactScore:
        doc_facts = set(parse_facts(document)[0])
        claims, unparsed = parse_facts(summary)
        supported = sum(c in doc_facts for c in claims)
        said = len(claims) + len(unparsed)
        faith = supported / said if said else 0.0
        cover = len(doc_facts & set(claims)) / len(doc_facts) if doc_facts else 0.0
        f1 = 2 * faith * cover / (faith + cover) if faith + cover else 0.0
        return FactScore(faith, cover, f1, len(claims), supported, len(unparsed))

    def entails(self, summary: str, document: str) -> bool:
        """Exact entailment: the summary says something, every claimed fact is in the document
        and every other sentence is a sentence of the document (a copied filler)."""
        claims, unparsed = parse_facts(summary)
        doc_facts, doc_sentences = set(parse_facts(document)[0]), set(split_sentences(document))
        return bool(claims or unparsed) and all(c in doc_facts for c in claims) and all(u in doc_sentences for u in unparsed)

    def hallucinates(self, summary: str, document: str) -> bool:
        """At least one claimed fact is not in the document (:attr:`FactScore.hallucinated`)."""
        return self.check(summary, document).hallucinated

    def score(self, completion: str, example: Mapping, metric: str = "faithfulness",
              source_field: str = "document") -> float:
        return float(getattr(self.check(completion, example[source_field]), metric))

    def reward_fn(self, metric: str = "faithfulness", source_field: str = "document") -> RewardFn:
        if metric not in self.metrics:
            raise ValueError(f"metric={metric!r}: expected one of {self.metrics}")
        return CallableReward(lambda p, c, e: self.score(c, e, metric, source_field), name=f"facts_{metric}")

    def vocabulary(self) -> list[str]:
        words = {"the", "Summarize", "Summary"}
        for text in [*RELATIONS, *FILLERS]:
            words.update(re.findall(r"[A-Za-z]+", text))
        words.update(COLOURS + ANIMALS + tuple(o for v in RELATIONS.values() for o in v))
        return sorted(words)

    def corpus(self, n: int = 2000, seed: int = 0) -> Iterator[str]:
        yield from _coverage_lines(self.vocabulary(), ".:\n")
        for ex in self.examples(n, seed):
            yield ex["prompt"] + ex["reference"]


def _coverage_lines(words: Sequence[str], symbols: str) -> Iterator[str]:
    """Each word at a line start and after a space; each symbol alone and after a space."""
    for w in words:
        yield f"{w} {w}"
    for s in symbols:
        yield f"{s} {s}" if not s.isspace() else s


class ArithmeticWorld:
    """Arithmetic and string-manipulation prompts with exact answers."""

    name = "arithmetic"
    NUMERIC = {"add": "+", "sub": "-", "mul": "*"}
    STRING = ("reverse", "copy", "sort")
    modes = ("exact", "partial")

    def __init__(self, ops: Sequence[str] = ("add", "sub", "mul", "reverse", "copy", "sort"), max_digits: int = 2,
                 min_len: int = 2, max_len: int = 5, alphabet: str = "abcdefgh") -> None:
        unknown = [o for o in ops if o not in self.NUMERIC and o not in self.STRING]
        if unknown or not ops:
            raise ValueError(f"unknown ops {unknown}; choose from {list(self.NUMERIC) + list(self.STRING)}")
        if not (alphabet.isalpha() and alphabet.islower() and len(set(alphabet)) == len(alphabet)):
            raise ValueError(f"alphabet={alphabet!r}: must be distinct lower-case letters")
        self.ops, self.max_digits, self.min_len, self.max_len, self.alphabet = tuple(ops), max_digits, min_len, max_len, alphabet

    def examples(self, n: int, seed: int = 0) -> list[dict]:
        rng = np.random.default_rng(seed)
        out = []
        for i in range(n):
            op = self.ops[rng.integers(len(self.ops))]
            if op in self.NUMERIC:
                a, b = (int(x) for x in rng.integers(0, 10**self.max_digits, size=2))
                if op == "sub" and b > a:
                    a, b = b, a
                answer = str({"add": a + b, "sub": a - b, "mul": a * b}[op])
                prompt, reference, kind = f"{a}{self.NUMERIC[op]}{b}=", answer, "number"
            else:
                letters = [self.alphabet[j] for j in rng.integers(len(self.alphabet), size=rng.integers(self.min_len, self.max_len + 1))]
                result = {"reverse": letters[::-1], "copy": letters, "sort": sorted(letters)}[op]
                answer = "".join(result)
                prompt, reference, kind = f"{op}: {' '.join(letters)} ->", " " + " ".join(result), "string"
            out.append({"id": f"arithmetic-{seed}-{i}", "op": op, "kind": kind, "prompt": prompt,
                        "answer": answer, "reference": reference})
        return out

    @staticmethod
    def prediction(completion: str) -> str:
        return "".join(completion.split("\n", 1)[0].split())

    def score(self, completion: str, example: Mapping, mode: str = "exact") -> float:
        pred, answer = self.prediction(completion), str(example["answer"])
        if mode == "exact":
            return float(pred == answer)
        if mode != "partial":
            raise ValueError(f"mode={mode!r}: expected one of {self.modes}")
        if example.get("kind") == "number":
            if not re.fullmatch(r"-?\d+", pred):
                return 0.0
            pred, answer = pred[::-1], answer[::-1]  # align at the last digit
        width = max(len(pred), len(answer))
        return sum(p == a for p, a in zip(pred, answer)) / width if width else 1.0

    def reward_fn(self, mode: str = "exact") -> RewardFn:
        if mode not in self.modes:
            raise ValueError(f"mode={mode!r}: expected one of {self.modes}")
        return CallableReward(lambda p, c, e: self.score(c, e, mode), name=f"arithmetic_{mode}")

    def vocabulary(self) -> list[str]:
        return sorted(set(self.STRING) | set(self.alphabet))

    def corpus(self, n: int = 2000, seed: int = 0) -> Iterator[str]:
        yield from _coverage_lines(self.vocabulary(), "0123456789+-*=:>\n")
        yield "-> ->"
        for ex in self.examples(n, seed):
            yield ex["prompt"] + ex["reference"]


WORLDS = {"facts": FactsWorld, "arithmetic": ArithmeticWorld}


def get_world(world: str | FactsWorld | ArithmeticWorld) -> FactsWorld | ArithmeticWorld:
    """A world instance from its name ('facts', 'arithmetic') or as given."""
    if isinstance(world, str):
        if world not in WORLDS:
            raise ValueError(f"unknown toy world {world!r}; worlds are {sorted(WORLDS)}")
        return WORLDS[world]()
    if hasattr(world, "corpus") and hasattr(world, "examples"):
        return world
    raise TypeError(f"expected a toy world or its name, got {type(world).__name__}")
