"""What fits an inference time budget: greedy forward selection of (run, TTA view) units under a cost constraint.

This is Caruana et al.'s ensemble selection ("Ensemble Selection from Libraries of Models", ICML 2004: forward
steps, runs chosen with replacement, so a run's weight is its number of votes) with every step restricted to those
that keep the predicted inference time within the budget. A step either adds one of a run's TTA views (paying that
view's cost per image, and the run's model loading when the run is new) or gives a run already chosen one more vote
(free: its predictions are made anyway). Each round takes the best step by the OOF score (the cheaper one on a tie)
and the selection stops when no step within the budget raises the score.

Costs are an upper bound by construction: a view's cost per image is measured with that view alone, so it includes
decoding the image, which the views of one run share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from kagglecv.core.errors import KagglecvError
from kagglecv.core.metrics import objective


@dataclass(frozen=True)
class UnitCosts:
    """Seconds on the machine that measured them: ``fixed[i]`` to load run ``i``'s fold models, ``per_image[i][v]``
    for each image through all of run ``i``'s folds with TTA view ``v``."""

    runs: list[str]
    fixed: list[float]
    per_image: list[dict[str, float]]

    def seconds(self, selection: "Selection", images: int) -> float:
        return sum(self.fixed[run] + images * sum(self.per_image[run][view] for view in selection.views[run])
                   for run in selection.used())


@dataclass(frozen=True)
class Selection:
    """The views chosen for each run (in the run's own order) and each run's votes (0: the run is left out)."""

    views: tuple[tuple[str, ...], ...]
    votes: tuple[int, ...]

    @classmethod
    def empty(cls, runs: int) -> "Selection":
        return cls(((),) * runs, (0,) * runs)

    def used(self) -> list[int]:
        return [run for run, votes in enumerate(self.votes) if votes > 0]

    def steps(self, candidates: list[list[str]]) -> Iterator["Selection"]:
        """Every selection one step away: a run gains a view (and a first vote), or a chosen run one more vote."""
        for run, views in enumerate(candidates):
            for view in views:
                if view in self.views[run]:
                    continue
                chosen = tuple(name for name in views if name in self.views[run] or name == view)
                yield Selection(_replaced(self.views, run, chosen), _replaced(self.votes, run, max(self.votes[run], 1)))
        if len(self.used()) > 1:  # a vote weighs a run against the others
            for run in self.used():
                yield Selection(self.views, _replaced(self.votes, run, self.votes[run] + 1))


def _replaced(values: tuple, index: int, value) -> tuple:
    return values[:index] + (value,) + values[index + 1:]


def select_within_budget(candidates: list[list[str]], costs: UnitCosts, images: int, budget_seconds: float,
                         blend_score: Callable[[Selection], float], higher_is_better: bool,
                         max_rounds: int = 100) -> Selection:
    """The selection of (run, view) units that ``blend_score`` rates best, within ``budget_seconds`` for ``images``
    images (greedy, see the module's docstring); an error when not even the cheapest single unit fits."""
    current, current_score = Selection.empty(len(candidates)), None
    for _ in range(max_rounds):
        feasible = [step for step in current.steps(candidates) if costs.seconds(step, images) <= budget_seconds]
        if not feasible:
            break
        rated = [(objective(blend_score(step), higher_is_better), -costs.seconds(step, images), index)
                 for index, step in enumerate(feasible)]
        best_score, _, best_index = max(rated)
        if current_score is not None and best_score <= current_score:
            break
        current, current_score = feasible[best_index], best_score
    if current_score is None:
        cheapest = min((costs.fixed[run] + images * seconds, costs.runs[run], view)
                       for run, views in enumerate(candidates) for view, seconds in costs.per_image[run].items()
                       if view in views)
        raise KagglecvError(f"--fit: nothing fits the budget: the cheapest unit, {cheapest[1]} with TTA {cheapest[2]}, "
                            f"needs {cheapest[0] / 60:.2f} minutes here for {images} images, over the "
                            f"{budget_seconds / 60:.2f} the budget allows (--max-minutes x --device-speed)")
    return current
