"""The budgeted ensemble selection behind ``pack --fit``, on planted OOF predictions and costs."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kagglecv.core.budget_selection import Selection, UnitCosts, select_within_budget
from kagglecv.core.errors import KagglecvError
from kagglecv.core.metrics import score

RNG = np.random.default_rng(0)
TARGETS = RNG.integers(0, 4, 400)


def planted(accuracy: float, seed: int) -> np.ndarray:
    """Probabilities that put the most mass on the true class for about ``accuracy`` of the rows."""
    rng = np.random.default_rng(seed)
    guess = np.where(rng.random(len(TARGETS)) < accuracy, TARGETS, rng.integers(0, 4, len(TARGETS)))
    probabilities = rng.random((len(TARGETS), 4)) * 0.5
    probabilities[np.arange(len(TARGETS)), guess] += 1.0
    return probabilities / probabilities.sum(axis=1, keepdims=True)


# run 0: slow and accurate; runs 1 and 2: fast, weaker, with independent errors
PREDICTIONS = [{"none": planted(0.9, 1), "hflip": planted(0.9, 2)}, {"none": planted(0.6, 3), "hflip": planted(0.6, 4)},
               {"none": planted(0.6, 5)}]
CANDIDATES = [list(views) for views in PREDICTIONS]
COSTS = UnitCosts(["slow", "fast-a", "fast-b"], [2.0, 1.0, 1.0],
                  [{"none": 0.5, "hflip": 0.5}, {"none": 0.01, "hflip": 0.01}, {"none": 0.01}])


def accuracy_of(selection: Selection) -> float:
    used = selection.used()
    runs = [np.mean([PREDICTIONS[run][view] for view in selection.views[run]], axis=0) for run in used]
    votes = np.array([selection.votes[run] for run in used], dtype=float)
    return score("accuracy", "multiclass", TARGETS, np.tensordot(votes / votes.sum(), np.stack(runs), axes=1))


def test_a_slow_accurate_run_is_dropped_when_the_budget_is_tight_and_kept_when_it_is_loose():
    images = 100
    tight = select_within_budget(CANDIDATES, COSTS, images, 10.0, accuracy_of, higher_is_better=True)
    assert tight.votes[0] == 0 and tight.used(), tight
    assert COSTS.seconds(tight, images) <= 10.0
    loose = select_within_budget(CANDIDATES, COSTS, images, 1000.0, accuracy_of, higher_is_better=True)
    assert loose.votes[0] > 0 and accuracy_of(loose) > accuracy_of(tight)
    every_unit = Selection(tuple(tuple(views) for views in CANDIDATES), (1, 1, 1))
    assert COSTS.seconds(every_unit, images) == pytest.approx(2 + 1 + 1 + 100 * (0.5 + 0.5 + 0.01 + 0.01 + 0.01))


def test_nothing_that_fits_is_one_error_naming_the_cheapest_unit():
    with pytest.raises(KagglecvError, match=r"--fit: nothing fits the budget: the cheapest unit, fast-a with TTA "
                                            r"hflip, needs 0\.03 minutes here for 100 images, over the 0\.01"):
        select_within_budget(CANDIDATES, COSTS, 100, 0.6, accuracy_of, higher_is_better=True)


def test_a_lower_is_better_metric_is_minimized():
    def loss(selection):
        return -accuracy_of(selection)

    chosen = select_within_budget(CANDIDATES, COSTS, 100, 1000.0, loss, higher_is_better=False)
    assert chosen == select_within_budget(CANDIDATES, COSTS, 100, 1000.0, accuracy_of, higher_is_better=True)


@settings(max_examples=40, deadline=None)
@given(budget=st.floats(0.05, 400), per_image=st.lists(st.floats(0.0001, 2.0), min_size=5, max_size=5),
       fixed=st.lists(st.floats(0.0, 5.0), min_size=3, max_size=3))
def test_the_selection_fits_the_budget_and_beats_every_single_unit_that_fits(budget, per_image, fixed):
    costs = UnitCosts(COSTS.runs, fixed, [{"none": per_image[0], "hflip": per_image[1]},
                                          {"none": per_image[2], "hflip": per_image[3]}, {"none": per_image[4]}])
    singles = [Selection(tuple((view,) if index == run else () for index in range(3)),
                         tuple(int(index == run) for index in range(3)))
               for run, views in enumerate(CANDIDATES) for view in views]
    fitting = [single for single in singles if costs.seconds(single, 50) <= budget]
    if not fitting:
        with pytest.raises(KagglecvError, match="nothing fits the budget"):
            select_within_budget(CANDIDATES, costs, 50, budget, accuracy_of, higher_is_better=True)
        return
    chosen = select_within_budget(CANDIDATES, costs, 50, budget, accuracy_of, higher_is_better=True)
    assert costs.seconds(chosen, 50) <= budget
    assert accuracy_of(chosen) >= max(accuracy_of(single) for single in fitting)
    assert all(set(chosen.views[run]) <= set(CANDIDATES[run]) for run in range(3))
    assert all((chosen.votes[run] > 0) == bool(chosen.views[run]) for run in range(3))


def test_each_step_adds_one_view_or_one_vote():
    start = Selection(((), ("none",), ()), (0, 1, 0))
    steps = list(start.steps(CANDIDATES))
    assert Selection((("none",), ("none",), ()), (1, 1, 0)) in steps
    assert Selection(((), ("none", "hflip"), ()), (0, 1, 0)) in steps
    assert not any(step.votes[1] == 2 for step in steps), "a vote means nothing while one run is chosen"
    two = Selection((("hflip",), ("none",), ()), (1, 1, 0))
    assert Selection((("hflip",), ("none",), ()), (2, 1, 0)) in list(two.steps(CANDIDATES))
    assert Selection((("none", "hflip"), ("none",), ()), (1, 1, 0)) in list(two.steps(CANDIDATES)), "run order kept"
    assert len(list(itertools.islice(start.steps(CANDIDATES), 100))) == 4
