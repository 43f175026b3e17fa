"""Test-time flips: `--tta` averages over the flips training used, and over none when training
did not flip (a chest CT is never flipped left-right at test time)."""

from __future__ import annotations

import numpy as np

from src.inference.runtime import load_run, split_outcomes


def test_tta_follows_the_flips_the_run_trained_with(tiny_run):
    flipped = load_run(tiny_run)  # the tiny run trains with flips along axis 0
    assert flipped.flips(True) == [(0,)] and flipped.flips(False) == []
    tta = split_outcomes(flipped, "test", tta=True).probs
    assert not np.allclose(tta, split_outcomes(flipped, "test").probs)
    # a run that trained without flips (configs/ct.yaml) gets none at test time either
    unflipped = load_run(tiny_run, overrides=["data.augment.flip_prob=0"])
    assert unflipped.flips(True) == []
    np.testing.assert_array_equal(
        split_outcomes(unflipped, "test", tta=True).probs, split_outcomes(unflipped, "test").probs
    )
