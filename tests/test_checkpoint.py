import pickle

import pytest
import torch

from pyro_vae.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    save_checkpoint,
    write_atomically,
)
from pyro_vae.errors import UserInputError


def test_round_trip(tmp_path):
    state = {"epoch": 3, "model": {"w": torch.arange(4.0)}, "rng": {"python": (3, (1, 2), None)}}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["format_version"] == FORMAT_VERSION
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.arange(4.0))


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"epoch": 1})

    def crash(f):
        f.write(b"half a checkpoint")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomically(path, crash)
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.zeros(1000)})
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserInputError, match="is not a readable pyro-vae checkpoint"):
        load_checkpoint(path)


class Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_pickle_is_refused_not_unpickled(tmp_path, capsys):
    path = tmp_path / "c.pt"
    torch.save({"format": "pyro-vae-checkpoint", "evil": Payload()}, path)
    with pytest.raises(UserInputError, match="not a readable pyro-vae checkpoint") as refused:
        load_checkpoint(path)
    assert "arbitrary code ran" not in capsys.readouterr().out
    assert "arbitrary code execution" in str(refused.value)  # torch's warning, not cut off
    path.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(UserInputError):
        load_checkpoint(path)


def test_foreign_torch_file_and_wrong_version(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserInputError, match="no 'pyro-vae-checkpoint' tag"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"format": "pyro-vae-checkpoint", "format_version": 999}, tmp_path / "new.pt")
    with pytest.raises(UserInputError, match="format version 999"):
        load_checkpoint(tmp_path / "new.pt")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(UserInputError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "c.pt")
