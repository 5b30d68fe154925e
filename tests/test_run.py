"""pyro_vae.run: subnormal floats flushed to zero while training, in the threads torch
starts meanwhile too, and the caller's arithmetic restored afterwards."""

import subprocess
import sys

import pytest
import torch

from pyro_vae import train
from pyro_vae.run import _flushing_denormals, flushed_denormals
from pyro_vae.trainer import Trainer
from tests.conftest import small_config

# In a fresh process: 1e-39 is subnormal in fp32; 100,000 elements are split between the
# two intra-op threads, so every element is zero only if both threads flush.
PROBE = """
import torch
from pyro_vae.run import flushed_denormals
torch.set_num_threads(2)
{context}
    x = torch.full((100_000,), 1e-39)  # its first parallel operation starts torch's threads
    print(int(((x * 1.0) == 0).sum()))
"""


def flushed_elements(context: str) -> int:
    command = [sys.executable, "-c", PROBE.format(context=context)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.fixture
def can_flush():
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormal floats")
    torch.set_flush_denormal(False)


def test_flushing_reaches_the_threads_torch_starts_meanwhile(can_flush):
    assert flushed_elements("if True:") == 0  # IEEE arithmetic keeps them
    assert flushed_elements("with flushed_denormals():") == 100_000


def test_train_flushes_while_it_runs_then_restores_the_mode(can_flush, monkeypatch, tmp_path):
    seen = []
    fit = Trainer.fit
    monkeypatch.setattr(
        Trainer, "fit", lambda self, *a: seen.append(_flushing_denormals()) or fit(self, *a)
    )
    assert not _flushing_denormals()
    train(small_config(epochs=1), run_dir=tmp_path / "ieee", progress=False)
    assert seen == [True] and not _flushing_denormals()
    with flushed_denormals():  # a caller that flushes keeps flushing
        train(small_config(epochs=1), run_dir=tmp_path / "flushing", progress=False)
        assert _flushing_denormals()
    assert not _flushing_denormals()
