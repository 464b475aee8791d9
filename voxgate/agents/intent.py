"""Built-in intent classifier trained from a flow's intent examples.

TF-IDF over word unigrams/bigrams and character 3-5-grams (which absorb
transcription slips and word forms), scored per intent as a mix of the cosine
similarity to the nearest example and to the intent's centroid. Below the
confidence threshold the answer is "no intent" (the flow's ``fallback``).

Training is deterministic (sorted vocabulary, no randomness) and takes
milliseconds, so each worker trains per agent version on load; classifying an
utterance is a sparse dot product (well under a millisecond).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxgate.agents.flowspec import Intent

DEFAULT_THRESHOLD = 0.3

# Nearest example catches close paraphrases; the centroid rewards words shared
# by many examples of one intent. Weights picked on the held-out set in tests.
_NEAREST_WEIGHT = 0.6
_CENTROID_WEIGHT = 0.4

_WORD_RE = re.compile(r"[a-z0-9]+")
_CONTRACTIONS = (
    ("n't", " not"),
    ("'re", " are"),
    ("'m", " am"),
    ("'ll", " will"),
    ("'d", " would"),
    ("'ve", " have"),
    ("'s", ""),
)


def _normalise(text: str) -> list[str]:
    lowered = text.lower().replace("\u2019", "'")
    lowered = lowered.replace("can't", "can not").replace("won't", "will not")
    for short, full in _CONTRACTIONS:
        lowered = lowered.replace(short, full)
    return _WORD_RE.findall(lowered)


def _stem(word: str) -> str:
    # A light suffix strip: char n-grams already cover most word forms.
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def features(text: str) -> Counter[str]:
    """Term counts of ``text``'s words (``w:``), word bigrams (``b:``) and char n-grams (``c:``)."""
    words = [_stem(w) for w in _normalise(text)]
    joined = " " + " ".join(words) + " "
    grams = ["c:" + joined[i : i + n] for n in (3, 4, 5) for i in range(len(joined) - n + 1)]
    counts = Counter(grams)
    counts.update("w:" + w for w in words)
    counts.update(f"b:{a}_{b}" for a, b in itertools.pairwise(words))
    return counts


@dataclass(frozen=True, slots=True)
class IntentPrediction:
    """The best intent (``None`` below threshold) and the per-intent scores, best first."""

    intent: str | None
    confidence: float
    ranking: tuple[tuple[str, float], ...]


class _SparseIndex:
    """Rows of sparse vectors stored column-wise (CSC), so a dot product with a short
    query touches only the query's features, in a handful of vectorised numpy calls."""

    def __init__(self, rows: Sequence[dict[int, float]], size: int, width: int) -> None:
        self.size = size
        features: list[int] = []
        row_ids: list[int] = []
        weights: list[float] = []
        for row_id, row in enumerate(rows):
            features.extend(row.keys())
            weights.extend(row.values())
            row_ids.extend([row_id] * len(row))
        by_feature = np.argsort(np.asarray(features, dtype=np.intp), kind="stable")
        counts = np.bincount(np.asarray(features, dtype=np.intp), minlength=width)
        self._starts = np.zeros(width + 1, dtype=np.intp)
        np.cumsum(counts, out=self._starts[1:])
        self._rows = np.asarray(row_ids, dtype=np.intp)[by_feature]
        self._weights = np.asarray(weights, dtype=np.float64)[by_feature]

    def dot(
        self, features: npt.NDArray[np.intp], values: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        starts = self._starts[features]
        lengths = self._starts[features + 1] - starts
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(self.size, dtype=np.float64)
        # positions of every stored entry of the query's columns, without a Python loop
        offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)
        contributions = self._weights[offsets] * np.repeat(values, lengths)
        sums = np.bincount(self._rows[offsets], weights=contributions, minlength=self.size)
        return sums.astype(np.float64, copy=False)


class IntentClassifier:
    """TF-IDF nearest-example + centroid classifier; see the module docstring."""

    def __init__(
        self, examples: Iterable[tuple[str, str]], *, threshold: float = DEFAULT_THRESHOLD
    ) -> None:
        """``examples`` are ``(intent, text)`` pairs; intents without examples never match."""
        pairs = sorted((name, text) for name, text in examples if text.strip())
        self.threshold = threshold
        self.intents: tuple[str, ...] = tuple(sorted({name for name, _ in pairs}))
        raw = [features(text) for _, text in pairs]
        document_frequency: dict[str, int] = {}
        for counts in raw:
            for feature in counts:
                document_frequency[feature] = document_frequency.get(feature, 0) + 1
        self._vocabulary = {f: i for i, f in enumerate(sorted(document_frequency))}
        n = max(len(raw), 1)
        # Character n-grams are many and overlapping: half weight keeps words in charge.
        self._idf = {
            f: (math.log((1 + n) / (1 + df)) + 1.0) * (0.5 if f.startswith("c:") else 1.0)
            for f, df in document_frequency.items()
        }
        self._tf = [0.0, *(1.0 + math.log(c) for c in range(1, 64))]
        vectors = [self._vector(counts) for counts in raw]
        self._example_intent = np.asarray(
            [self.intents.index(name) for name, _ in pairs], dtype=np.intp
        )
        width = len(self._vocabulary)
        self._examples = _SparseIndex(vectors, len(vectors), width)
        totals: list[dict[int, float]] = [{} for _ in self.intents]
        for vec, k in zip(vectors, self._example_intent.tolist(), strict=True):
            total = totals[k]
            for f, w in vec.items():
                total[f] = total.get(f, 0.0) + w
        self._centroids = _SparseIndex([_l2(t) for t in totals], len(totals), width)

    @classmethod
    def from_intents(
        cls, intents: Sequence[Intent], *, threshold: float = DEFAULT_THRESHOLD
    ) -> IntentClassifier:
        return cls(
            ((i.name, example) for i in intents for example in i.examples), threshold=threshold
        )

    def _vector(self, counts: Counter[str]) -> dict[int, float]:
        vec: dict[int, float] = {}
        vocabulary, idf, tf = self._vocabulary, self._idf, self._tf
        for feature, count in counts.items():
            index = vocabulary.get(feature)
            if index is not None:
                vec[index] = (tf[count] if count < 64 else 1.0 + math.log(count)) * idf[feature]
        return _l2(vec)

    def scores(self, text: str) -> dict[str, float]:
        """Score in [0, 1] for every intent."""
        if not self.intents:
            return {}
        query = self._vector(features(text))
        if not query:
            return dict.fromkeys(self.intents, 0.0)
        keys = np.fromiter(query.keys(), dtype=np.intp, count=len(query))
        values = np.fromiter(query.values(), dtype=np.float64, count=len(query))
        nearest = np.zeros(len(self.intents), dtype=np.float64)
        np.maximum.at(nearest, self._example_intent, self._examples.dot(keys, values))
        combined = _NEAREST_WEIGHT * nearest + _CENTROID_WEIGHT * self._centroids.dot(keys, values)
        return {name: float(min(max(combined[k], 0.0), 1.0)) for k, name in enumerate(self.intents)}

    def classify(self, text: str, *, threshold: float | None = None) -> IntentPrediction:
        """The best intent, or ``intent=None`` when its score is below the threshold."""
        limit = self.threshold if threshold is None else threshold
        ranking = tuple(sorted(self.scores(text).items(), key=lambda kv: (-kv[1], kv[0])))
        if not ranking or ranking[0][1] < limit:
            return IntentPrediction(None, ranking[0][1] if ranking else 0.0, ranking)
        return IntentPrediction(ranking[0][0], ranking[0][1], ranking)


def _l2(vec: dict[int, float]) -> dict[int, float]:
    norm = math.sqrt(sum(w * w for w in vec.values()))
    if norm == 0.0:
        return {}
    return {f: w / norm for f, w in vec.items()}
