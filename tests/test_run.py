"""pyro_vae.run: subnormal floats flushed to zero, in the threads torch starts too."""

import subprocess
import sys

import pytest
import torch

from pyro_vae import train
from tests.conftest import small_config

# In a fresh process: 1e-39 is subnormal in fp32; 100,000 elements are split between the
# two intra-op threads, so every element is zero only if both threads flush.
PROBE = """
import torch
from pyro_vae.run import flush_denormals
torch.set_num_threads(2)
{flush}
x = torch.full((100_000,), 1e-39)
print(int(((x * 1.0) == 0).sum()))
"""


def flushed_elements(flush: str) -> int:
    command = [sys.executable, "-c", PROBE.format(flush=flush)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_flush_denormals_reaches_the_threads_torch_starts_afterwards():
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormal floats")
    assert flushed_elements("") == 0  # IEEE arithmetic keeps them
    assert flushed_elements("flush_denormals()") == 100_000


def test_train_flushes_denormals(tmp_path):
    torch.set_flush_denormal(False)
    train(small_config(epochs=1), run_dir=tmp_path / "run", progress=False)
    assert (torch.tensor([1e-39]) * 1.0).item() == 0.0
