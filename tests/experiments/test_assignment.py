"""Sticky assignment: the same user gets the same variant in every process, the split follows the weights, and
one experiment's assignment tells nothing about another's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

from scipy import stats

from upcoach.experiments.assignment import Variant, assign, bucket

AB = [Variant("control", 1.0), Variant("treatment", 1.0)]
USERS = [f"user-{i}" for i in range(10_000)]


def test_assignment_is_the_same_in_another_process_with_another_hash_seed() -> None:
    here = [assign("chips", user, AB).name for user in USERS[:500]]
    script = (
        "import json; from upcoach.experiments.assignment import Variant, assign; "
        "ab = [Variant('control', 1.0), Variant('treatment', 1.0)]; "
        "print(json.dumps([assign('chips', f'user-{i}', ab).name for i in range(500)]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == here
    assert set(here) == {"control", "treatment"}


def test_equal_weights_are_balanced_for_10k_users() -> None:
    counts = Counter(assign("chips", user, AB).name for user in USERS)
    result = stats.chisquare([counts["control"], counts["treatment"]])
    assert result.pvalue > 0.001, counts


def test_uneven_weights_are_followed() -> None:
    variants = [Variant("a", 70), Variant("b", 20), Variant("c", 10)]
    counts = Counter(assign("weights", user, variants).name for user in USERS)
    observed = [counts["a"], counts["b"], counts["c"]]
    assert stats.chisquare(observed, f_exp=[7000, 2000, 1000]).pvalue > 0.001, observed
    # The same test must reject a split that ignores the weights, or it proves nothing.
    assert stats.chisquare(observed, f_exp=[10_000 / 3] * 3).pvalue < 1e-6


def test_buckets_are_uniform_and_independent_between_experiments() -> None:
    first = [bucket("exp-one", user) for user in USERS]
    assert stats.kstest(first, "uniform").pvalue > 0.001
    # Another experiment's assignment is independent of this one: a 2x2 table shows no association.
    one = [assign("exp-one", user, AB).name for user in USERS]
    two = [assign("exp-two", user, AB).name for user in USERS]
    table = Counter(zip(one, two, strict=True))
    contingency = [[table[("control", "control")], table[("control", "treatment")]],
                   [table[("treatment", "control")], table[("treatment", "treatment")]]]  # fmt: skip
    assert stats.chi2_contingency(contingency).pvalue > 0.001


def test_other_experiments_do_not_move_anyone() -> None:
    before = [assign("chips", user, AB).name for user in USERS[:1000]]
    # Creating a new experiment, or changing another one's variants, does not enter this one's hash.
    for user in USERS[:1000]:
        assign("another", user, [Variant("x", 3), Variant("y", 1), Variant("z", 1)])
    assert [assign("chips", user, AB).name for user in USERS[:1000]] == before
