"""pyro-vae: variational autoencoders as genuine Pyro programs.

from pyro_vae import TrainConfig, train, load_run, evaluate
run = train(TrainConfig(dataset="digits", epochs=10), run_dir="runs/demo")
print(run.test_elbo)                      # nats per image
print(evaluate(load_run("runs/demo")))    # the same number, recomputed from the checkpoint
"""

from pyro_vae.config import TrainConfig
from pyro_vae.errors import UserInputError
from pyro_vae.evaluate import elbo_per_datapoint
from pyro_vae.registry import REGISTRY, build_vae, make_elbo, register
from pyro_vae.run import Run, load_run
from pyro_vae.train import train


def evaluate(run: Run, split: str = "test") -> float:
    """The run's ELBO on ``split`` in nats per image, under the fixed evaluation seed."""
    return elbo_per_datapoint(
        run.model, run.guide, make_elbo(run.config), run.data, split, run.config.eval_batch_size
    )


__all__ = [
    "REGISTRY",
    "Run",
    "TrainConfig",
    "UserInputError",
    "build_vae",
    "evaluate",
    "load_run",
    "make_elbo",
    "register",
    "train",
]
