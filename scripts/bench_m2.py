"""M2's training step with the label joined by concatenation, and as pyro-vae computes it.

q(z | x, y) reads ``act(W [h(x); onehot(y)] + b)``. Under parallel enumeration of the
label (every unlabelled image scored under each of the C classes) the concatenated input
holds C copies of h(x), and the product with W is made C times. pyro-vae splits the weight,
``W_h h(x) + b + W_y[:, y]`` (``pyro_vae.nn.linear_with_label``): one product per image,
then a column per class. Same parameters, same loss up to rounding.

Both forms train the paper configuration of ``scripts/semisupervised_mnist.py`` (one hidden
layer of 500 softplus units, 50 latent dimensions, batches of 100 unlabelled and 100
labelled MNIST images, 3,000 labels) the way ``pyro-vae train`` does (the JIT-traced loss,
fused Adam, the finiteness check), side by side in one process, alternating rounds so
that both see the same machine load; the table gives each form's median over the rounds.

    python scripts/bench_m2.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import statistics
import time
import types

import pyro
import torch
from bench_common import DEFAULT_DATA_DIR, print_header
from pyro_vae.guides.conditional import LabelConditionedEncoder
from torch import nn

from pyro_vae.compiled import training_loss
from pyro_vae.config import TrainConfig
from pyro_vae.data import load_data
from pyro_vae.nn import with_label
from pyro_vae.registry import build_vae, make_elbo
from pyro_vae.run import resolve_device
from pyro_vae.semisupervised import training_batches
from pyro_vae.svi import adam, svi_step

CONFIG = dict(
    model="m2", dataset="mnist", labels=3000, hidden_dims=[500], latent_dim=50,
    activation="softplus", lr=3e-4, batch_size=100,
)  # fmt: skip


def concatenated_join(self: LabelConditionedEncoder, inputs):
    """The join as written in the math: the label's one-hot code concatenated to h(x)."""
    x, y = inputs
    return self.join(with_label(self.encoder(x), y, self.num_classes))


def trainer(form: str, data, batches, device, compile_mode: str):
    """A step function for one form of the join: model, guide, loss and Adam of their own,
    from the same initial parameters (seed 0)."""
    config = TrainConfig(**CONFIG, compile=compile_mode)
    pyro.clear_param_store()  # a trace is made with the param store holding this pair alone
    pyro.set_rng_seed(0)
    model, guide = build_vae(config, data.image_shape, 10)
    model, guide = model.to(device), guide.to(device)
    if form == "concatenated":
        encoder = guide.family.encoder
        encoder.forward = types.MethodType(concatenated_join, encoder)
    named = list(nn.ModuleDict({"model": model, "guide": guide}).named_parameters())
    with pyro.validation_enabled(False):
        loss_fn, mode = training_loss(
            make_elbo(config, data.train.shape[0]), model, guide, batches[0], named, compile_mode
        )
    optimizer = adam([p for _, p in named], config.lr)

    def steps(chunk) -> None:
        with pyro.validation_enabled(False):
            for batch in chunk:
                _, taken = svi_step(loss_fn, optimizer, batch)
                assert taken, "non-finite step"

    return steps, loss_fn, mode


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", default="jit", choices=["jit", "eager"])
    args = parser.parse_args()

    device = resolve_device(args.device)
    print_header(device)

    data = load_data("mnist", "dynamic", device, args.data_dir, download=False)
    config = TrainConfig(**CONFIG)
    source = training_batches(config, data, *build_vae(config, data.image_shape))
    generator = torch.Generator(device=device).manual_seed(0)
    order = torch.randperm(source.size, generator=generator, device=device).split(100)
    batches = [source.batch(i, generator, generator, lambda t: t) for i in order[: args.steps]]

    forms = {form: trainer(form, data, batches, device, args.compile) for form in
             ("concatenated", "split")}  # fmt: skip
    # Enumeration refuses a loss without gradients, hence no torch.no_grad here.
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(1)
        concatenated = forms["concatenated"][1](*batches[0]).item()
        pyro.set_rng_seed(1)
        split = forms["split"][1](*batches[0]).item()
    print(f"loss of one batch, same draws: concatenated {concatenated:.4f}, split {split:.4f}")

    seconds: dict[str, list[float]] = {form: [] for form in forms}
    for steps, _, _ in forms.values():
        steps(batches[:3])  # warm-up: the JIT trace, allocations
    for _ in range(args.rounds):
        for form, (steps, _, _) in forms.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            steps(batches)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[form].append((time.perf_counter() - start) / len(batches))

    print(
        f"\nm2, paper configuration, batches of 100 + 100, --compile "
        f"{forms['split'][2]}; {args.rounds} rounds of {args.steps} steps, median\n"
    )
    steps_per_epoch = source.size // CONFIG["batch_size"]
    print(f"| label join | ms per step | s per epoch ({steps_per_epoch} steps) | speed-up |")
    print("| --- | --- | --- | --- |")
    base = statistics.median(seconds["concatenated"])
    for form, times in seconds.items():
        median = statistics.median(times)
        print(
            f"| {form} | {1000 * median:.1f} | {steps_per_epoch * median:.0f} "
            f"| {base / median:.2f}× |"
        )


if __name__ == "__main__":
    main()
