"""The map scores, one registry: one :class:`Score` record per score, every list derived.

A record says what readers and writers both need to know of a score, with no function
attached, so that the UI can read it without importing ``jobs``:

- ``name``: its metric name (a :class:`latentscape.tracking.contract.Metric` constant);
- ``direction``: the way a sweep optimises it by default (``"maximize"``,
  ``"minimize"``, or None where the user must say);
- ``labelled``: computed against the true labels; such a score is also logged over
  clustered points only, under ``name + Metric.CLUSTERED_SUFFIX`` (same direction);
- ``batched``: it has a batched twin in :func:`latentscape.jobs.core.trust.label_score_batch`
  (many permutations or resamples at once, for the trust baselines);
- ``summary`` / ``clustered_summary``: its place (1 first) in a run's summary (the
  command line's, the best trial's), or None when it is logged but not shown (a place,
  not a flag: the summary leads with AMI, which the logging order does not);
- ``on_map``: also shown under each map on the Maps page (a shorter line).

The functions are attached on the jobs side: :func:`latentscape.jobs.core.scores.plain_functions`
maps each name to the function computing it, and a test checks that every record has
one (and a batched one where ``batched``). Adding a score is one record here, its
function there and its test.
"""

from __future__ import annotations

from dataclasses import dataclass

from latentscape.tracking.contract import Metric

__all__ = [
    "MAXIMIZE",
    "MINIMIZE",
    "Score",
    "SCORES",
    "BY_NAME",
    "LABEL_SCORES",
    "BATCHED",
    "SCORE_NAMES",
    "DIRECTIONS",
    "SUMMARY",
    "ON_MAP",
]

MAXIMIZE = "maximize"
MINIMIZE = "minimize"


@dataclass(frozen=True)
class Score:
    """One map score; see the module docstring for each field."""

    name: str
    direction: str | None = MAXIMIZE
    labelled: bool = False
    batched: bool = False
    summary: int | None = None
    clustered_summary: int | None = None
    on_map: bool = False


# In the order the scores are logged and listed (``--help``'s objectives).
SCORES: tuple[Score, ...] = (
    Score(Metric.MUTUAL_INFO, labelled=True, batched=True, summary=3),  # nats
    Score(Metric.NMI, labelled=True, batched=True, summary=2, on_map=True),
    Score(Metric.AMI, labelled=True, batched=True, summary=1, clustered_summary=8, on_map=True),
    Score(Metric.ARI, labelled=True, batched=True, summary=4),
    Score(Metric.HOMOGENEITY, labelled=True, batched=True),
    Score(Metric.COMPLETENESS, labelled=True, batched=True),
    Score(Metric.V_MEASURE, labelled=True, batched=True, summary=5),
    # More clusters is neither better nor worse: a sweep on it needs --direction.
    Score(Metric.N_CLUSTERS, direction=None, summary=6, on_map=True),
    Score(Metric.NOISE_FRACTION, direction=MINIMIZE, summary=7, on_map=True),
    Score(Metric.SILHOUETTE, summary=9),
    Score(Metric.TRUSTWORTHINESS, summary=10, on_map=True),
    Score(Metric.KNN_PRESERVATION, summary=11),
)

BY_NAME: dict[str, Score] = {score.name: score for score in SCORES}

# The label scores (their ``_clustered`` twins excluded) and those with a batched twin.
LABEL_SCORES: tuple[str, ...] = tuple(score.name for score in SCORES if score.labelled)
BATCHED: tuple[str, ...] = tuple(score.name for score in SCORES if score.batched)


def _clustered(name: str) -> str:
    return name + Metric.CLUSTERED_SUFFIX


# Every score a map logs (with labels): the label scores, their clustered twins, the rest.
SCORE_NAMES: tuple[str, ...] = (
    *LABEL_SCORES,
    *(_clustered(name) for name in LABEL_SCORES),
    *(score.name for score in SCORES if not score.labelled),
)

# The direction a sweep optimises each score in by default (None: the user must say).
DIRECTIONS: dict[str, str | None] = {
    name: BY_NAME[name.removesuffix(Metric.CLUSTERED_SUFFIX)].direction for name in SCORE_NAMES}


def _summary() -> tuple[str, ...]:
    placed = [(score.summary, score.name) for score in SCORES if score.summary is not None]
    placed += [(score.clustered_summary, _clustered(score.name)) for score in SCORES
               if score.clustered_summary is not None]
    return tuple(name for _, name in sorted(placed))


# The scores a run's summary shows, in order (every score is logged).
SUMMARY: tuple[str, ...] = _summary()
# The scores shown under each map on the Maps page, in the summary's order.
ON_MAP: tuple[str, ...] = tuple(name for name in SUMMARY if name in BY_NAME and BY_NAME[name].on_map)
