"""Pyro model/guide pairs written the ways users write them, for the tests of
``importance_log_likelihood`` and ``train_pair`` on pairs outside the registry."""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch import nn

from pyro_vae.nn import positive
from tests.linear_gaussian import LATENT, PIXELS, SIGMA

Z, HIDDEN, IMAGE = 8, 64, 64  # small_config's latent and hidden sizes; digits are 8x8


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = (
            nn.Linear(IMAGE, HIDDEN),
            nn.Linear(HIDDEN, Z),
            nn.Linear(HIDDEN, Z),
        )

    def forward(self, x):
        hidden = nn.functional.softplus(self.fc1(x.reshape(-1, IMAGE)))
        # positive(): the registry's scale, so the registry pair of the same size is this network
        return self.fc21(hidden), positive(self.fc22(hidden))


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc3, self.fc4 = nn.Linear(Z, HIDDEN), nn.Linear(HIDDEN, IMAGE)

    def forward(self, z):
        return self.fc4(nn.functional.softplus(self.fc3(z)))  # logits


class TutorialVAE(nn.Module):
    """Pyro's VAE tutorial, at the size of the digits: model and guide are methods that
    register the decoder and the encoder, the image is flattened inside them, the sites
    are 'latent' and 'obs' in pyro.plate('data')."""

    def __init__(self):
        super().__init__()
        self.encoder, self.decoder = Encoder(), Decoder()

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = x.new_zeros(x.shape[0], Z), x.new_ones(x.shape[0], Z)
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            logits = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(logits=logits).to_event(1), obs=x.reshape(-1, IMAGE))

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


# A pair of plain functions of pyro.params, on vectors (N, PIXELS), with a data plate named
# "batch": the linear-Gaussian model and a linear amortized Gaussian guide, whose scale is a
# pyro.param under a positivity constraint.
def functional_model(x):
    weight = pyro.param("weight", lambda: 0.1 * torch.randn(PIXELS, LATENT))
    bias = pyro.param("bias", torch.zeros(PIXELS))
    with pyro.plate("batch", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ weight.T + bias, SIGMA).to_event(1), obs=x)


def functional_guide(x):
    weight = pyro.param("guide_weight", torch.zeros(LATENT, PIXELS))
    scale = pyro.param("guide_scale", torch.ones(LATENT), constraint=dist.constraints.positive)
    with pyro.plate("batch", x.shape[0]):
        pyro.sample("z", dist.Normal(x @ weight.T, scale).to_event(1))


class PyroDecoder(PyroModule):
    def __init__(self):
        super().__init__()
        # Root PyroModules name their parameters by attribute path alone: the decoder's and
        # the encoder's must differ, or they would share one entry of Pyro's param store.
        self.decode = PyroModule[nn.Linear](LATENT, PIXELS)
        self.log_sigma = PyroParam(torch.tensor(math.log(SIGMA)))
        self.dropout = nn.Dropout(0.5)  # would make the estimate noisy outside eval mode

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))
            loc = self.dropout(self.decode(z))
            pyro.sample("x", dist.Normal(loc, self.log_sigma.exp()).to_event(1), obs=x)


class PyroEncoder(PyroModule):
    def __init__(self):
        super().__init__()
        self.encode = PyroModule[nn.Linear](PIXELS, 2 * LATENT)

    def forward(self, x):
        loc, raw = self.encode(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, positive(raw)).to_event(1))


def build_tutorial_vae():
    """The tutorial VAE's builder (``builder="tests.user_pairs:build_tutorial_vae"``): the
    pair, and its decoder mean E[x | z] for samples and reconstructions."""
    from pyro_vae import PairParts

    vae = TutorialVAE()
    return PairParts(vae.model, vae.guide, lambda latent: torch.sigmoid(vae.decoder(latent)))


def build_tutorial_pair():
    """The tutorial VAE's builder without a decoder mean: a run pyro-vae can evaluate, but
    whose samples it cannot draw."""
    vae = TutorialVAE()
    return vae.model, vae.guide


def train_tutorial_vae(run_dir: str) -> None:
    """The tutorial VAE trained on the digits with train_pair: what tests/test_pairs.py runs
    in one process and under torchrun (``python -m tests.user_pairs RUN_DIR``)."""
    from pyro_vae import TrainConfig, train_pair
    from pyro_vae.data import load_data

    data = load_data("digits", "none")
    torch.manual_seed(0)
    vae = TutorialVAE()
    config = TrainConfig(
        epochs=2, batch_size=64, valid_size=137, binarize="dynamic", lr=3e-3, device="cpu"
    )
    train_pair(
        vae.model,
        vae.guide,
        data.train.float() / 255,
        config,
        run_dir,
        test_images=data.test.float() / 255,
        progress=False,
    )


if __name__ == "__main__":
    import sys

    train_tutorial_vae(sys.argv[1])
