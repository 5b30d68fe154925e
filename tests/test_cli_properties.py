"""Property test: random argument lists never make the CLI's parsing raise a traceback."""

import contextlib
import io
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_vae.cli import build_parser, one_line, train_config_from_args
from pyro_vae.config import TrainConfig
from pyro_vae.errors import UserInputError


def train_flags() -> list[str]:
    subcommands = build_parser()._subparsers._group_actions[0].choices
    return [
        action.option_strings[-1]
        for action in subcommands["train"]._actions
        if action.option_strings and action.option_strings[-1] != "--help"
    ]


FLAGS = train_flags()
VALUES = st.one_of(
    st.sampled_from(
        [
            "0",
            "-1",
            "1",
            "2.5",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "",
            "digits",
            "mnist",
            "bernoulli",
            "diag-normal",
            "trace",
            "none",
            "cuda",
            "cpu",
            "--",
            "-",
        ]
    ),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=12),
)
TOKENS = st.one_of(st.sampled_from(FLAGS), VALUES)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKENS, max_size=8))
def test_random_train_arguments_end_in_a_config_or_a_clear_error(tokens):
    parser = build_parser()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parser.parse_args(["train", *tokens])
    except SystemExit as exit_info:  # argparse's own usage error
        assert exit_info.code == 2
        lines = stderr.getvalue().strip().splitlines()
        assert len(lines) == 1 and re.match(r"pyro-vae( train)?: error: ", lines[0])
        return
    try:
        config = train_config_from_args(args)
    except UserInputError as error:
        assert str(error) and len(one_line(str(error)).splitlines()) == 1
        return
    assert isinstance(config, TrainConfig)
