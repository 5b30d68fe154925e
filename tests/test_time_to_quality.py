"""scripts/time_to_quality.py: the time-to-threshold cells of its table (the timings
themselves are measured by running the script, not by tests)."""

from tests.conftest import load_script

time_to_quality = load_script("time_to_quality")


def test_time_to_threshold_counts_training_seconds_up_to_the_first_epoch_that_reaches_it():
    history = [
        {"epoch": 0, "test_elbo": -540.0, "seconds": 0.0},  # the untrained evaluation
        {"epoch": 1, "test_elbo": -120.0, "seconds": 4.0},
        {"epoch": 2, "test_elbo": -104.5, "seconds": 3.0},
        {"epoch": 3, "test_elbo": -101.0, "seconds": 5.0},
    ]
    time_to_threshold = time_to_quality.time_to_threshold
    assert time_to_threshold(history, -105.0) == ("2", "7.0", 4.0)
    assert time_to_threshold(history, -120.0) == ("1", "4.0", 4.0)
    assert time_to_threshold(history, -100.0) == ("not in 3", "-", 4.0)
