"""scripts/bench_compile.py: its table of step times against the jit variant (the timings
themselves are measured by running the script, not by tests)."""

from tests.conftest import load_script

bench_compile = load_script("bench_compile")


def test_table_gives_each_variant_against_jit_and_lists_the_failed(capsys):
    bench_compile.print_table(
        {"eager": 0.003, "jit": 0.0015}, {"compile-loss": "RuntimeError: no compiler"}
    )
    assert capsys.readouterr().out.splitlines() == [
        "| variant | ms per step | vs jit |",
        "| --- | --- | --- |",
        "| eager | 3.00 | 2.00x |",
        "| jit | 1.50 | 1.00x |",
        "| compile-loss | failed: RuntimeError: no compiler | |",
    ]


def test_table_without_jit_leaves_the_ratio_empty(capsys):
    bench_compile.print_table({"eager": 0.003}, {})
    assert capsys.readouterr().out.splitlines()[-1] == "| eager | 3.00 |  |"
