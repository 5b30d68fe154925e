"""Train five small runs and fingerprint them: a refactoring must leave every number as it was.

Each run (digits, 2 epochs, CPU) is reduced to the SHA-256 of every parameter tensor of its
model and guide and its metrics rows without their times. Run it with the code before and
after a change, each on the path first, and compare the two files:

    PYTHONPATH=/path/to/old/checkout python scripts/check_training_identity.py old.json
    python scripts/check_training_identity.py new.json && cmp old.json new.json

The runs cover the one-layer VAE, the two-layer models with the VampPrior, m2 (its label
enumerated, a labelled subset), the cvae and an IWAE objective with DReG gradients.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from pyro_vae import TrainConfig, train

SMALL = dict(dataset="digits", epochs=2, hidden_dims=[32], latent_dim=4, batch_size=64,
             device="cpu", tensorboard=False)  # fmt: skip
RUNS = {
    "vae": {},
    "hvae-vamp": {"model": "hvae", "top_latent_dim": 3, "prior": "vamp", "prior_components": 5},
    "m2": {"model": "m2", "labels": 100},
    "cvae": {"model": "cvae"},
    "iwae-dreg": {"elbo": "iwae-dreg", "num_particles": 3, "kl_warmup_epochs": 2},
}


def fingerprint(name: str, overrides: dict, folder: Path) -> dict:
    torch.set_num_threads(1)  # the same reduction order whatever the machine
    run = train(TrainConfig(**SMALL, **overrides), run_dir=folder / name, progress=False)
    tensors = {
        f"{part}.{key}": hashlib.sha256(value.detach().cpu().numpy().tobytes()).hexdigest()
        for part in ("model", "guide")
        for key, value in sorted(getattr(run, part).state_dict().items())
    }
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in run.history]
    return {"tensors": tensors, "metrics": rows}


def main(out: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        result = {name: fingerprint(name, o, Path(folder)) for name, o in RUNS.items()}
    Path(out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}: {len(result)} runs")


if __name__ == "__main__":
    main(sys.argv[1])
