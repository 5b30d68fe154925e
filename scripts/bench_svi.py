"""SVI epoch time on MNIST: pyro-vae's training loop beside other loops, in one process.

The network is that of Pyro's ``examples/vae/vae.py``: 784-400-50 MLP encoder and decoder,
softplus, batch 256, Adam(lr=1e-3), Trace_ELBO, dynamically binarized MNIST. Each loop gets
its own freshly initialized copy of the same network (and its own Pyro param store), and
the loops take turns epoch by epoch so that machine drift hits them alike.

    pyro-vae          pyro_vae.svi.svi_epoch with the loss and optimizer ``pyro-vae train``
                      uses: Pyro's JIT-traced Trace_ELBO (pyro_vae.compiled), one fused
                      Adam, data resident on the device, the per-step check for a
                      non-finite loss or gradient
    pyro-vae-eager    the same with Pyro's eager Trace_ELBO module (--compile eager)
    pyro-vae-bf16     pyro-vae with --precision bf16 (not run unless named in --loops)
    pyro-vae-unchecked  pyro-vae without the finiteness check, to show what it costs (on a
                      GPU the check waits for nothing: the fused optimizer skips a bad
                      update on the device, the flags are read at the epoch's end)
    hand-written      the same estimator written by hand in PyTorch (reparameterized z,
                      log p(x|z) + log p(z) - log q(z|x)), same data path, same fused Adam
    hand-written-foreach  the same with torch's foreach Adam, the loop of earlier tables
    pyro-svi          plain pyro.infer.SVI + pyro.optim.Adam, data resident on the device
    pyro-example      shaped like Pyro's example: DataLoader over the images, svi.step(x)

    python scripts/bench_svi.py --data-dir ../shared/data --epochs 3
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pyro
import pyro.optim
import torch
from torch.nn import functional as F

from pyro_vae.compiled import training_loss
from pyro_vae.config import TrainConfig
from pyro_vae.data import load_data
from pyro_vae.registry import build_vae, make_elbo
from pyro_vae.run import resolve_device
from pyro_vae.svi import adam, svi_epoch

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def network(config: TrainConfig, image_shape, device):
    model, guide = build_vae(config, image_shape)
    return model.to(device), guide.to(device)


LOOPS = [
    "pyro-vae",
    "pyro-vae-eager",
    "hand-written",
    "hand-written-foreach",
    "pyro-svi",
    "pyro-example",
]


def handwritten_loss(model, guide, x: torch.Tensor) -> torch.Tensor:
    """-ELBO summed over the batch, one reparameterized sample per image, in plain PyTorch."""
    hidden = guide.encoder(x)
    loc = guide.loc(hidden)
    scale = F.softplus(guide.scale(hidden)) + 1e-6
    eps = torch.randn_like(loc)
    z = loc + scale * eps
    logits = model.decoder(z)
    log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(-1)
    half_log_2pi = 0.5 * math.log(2 * math.pi) * z.shape[-1]
    log_pz = -0.5 * z.pow(2).sum(-1) - half_log_2pi
    log_qz = (-0.5 * eps.pow(2) - scale.log()).sum(-1) - half_log_2pi
    return -(log_px + log_pz - log_qz).sum()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per loop")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs per loop first")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--loops", nargs="+", default=LOOPS, help="also: pyro-vae-bf16, pyro-vae-unchecked"
    )
    args = parser.parse_args()

    device = resolve_device(args.device)
    config = TrainConfig(
        dataset="mnist",
        latent_dim=50,
        hidden_dims=[400],
        activation="softplus",
        batch_size=256,
        lr=1e-3,
        elbo="trace",
    )
    # All 60,000 training images (the validation split too), as in Pyro's example: 235 steps.
    grey = load_data("mnist", "none", device, args.data_dir, download=False)
    data = dataclasses.replace(grey, binarize="dynamic", train=torch.cat([grey.train, grey.valid]))
    n_train = data.train.shape[0]
    print(f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(f"device: {device} ({name}), torch threads: {torch.get_num_threads()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, pyro {pyro.__version__}")
    print(f"MNIST train images: {n_train}, batch 256, steps per epoch: {math.ceil(n_train / 256)}")

    pyro.set_rng_seed(0)
    generator = torch.Generator(device=device).manual_seed(0)
    store = pyro.get_param_store()

    def own_param_store(epoch):
        # Each Pyro loop keeps its own parameter store (begun empty by its maker), swapped
        # in around its epochs, because all of them register modules under the same names.
        state = {"store": store.get_state()}

        def run():
            store.clear()
            store.set_state(state["store"])
            total = epoch()
            state["store"] = store.get_state()
            return total

        return run

    def make_pyro_vae(compile_mode: str, precision: str = "fp32", check_finite: bool = True):
        store.clear()
        loop_config = dataclasses.replace(config, compile=compile_mode, precision=precision)
        model, guide = network(loop_config, data.image_shape, device)
        named = list(torch.nn.ModuleDict({"model": model, "guide": guide}).named_parameters())
        x = data.train_batch(torch.arange(256, device=device), torch.Generator(device=device))
        loss_fn, mode = training_loss(make_elbo(config), model, guide, x, named, compile_mode)
        assert mode == compile_mode, f"the {compile_mode} path fell back to {mode}"
        optimizer = adam([p for _, p in named], config.lr)
        return own_param_store(
            lambda: svi_epoch(loss_fn, optimizer, data, generator, 256, None, check_finite)
        )

    def make_handwritten(fused: bool):
        model, guide = network(config, data.image_shape, device)
        params = list(model.parameters()) + list(guide.parameters())
        if fused:
            optimizer = adam(params, config.lr)
        else:
            optimizer = torch.optim.Adam(params, lr=config.lr, foreach=True)

        def epoch():
            total = torch.zeros((), device=device)
            for index in torch.randperm(n_train, generator=generator, device=device).split(256):
                loss = handwritten_loss(model, guide, data.train_batch(index, generator))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach()
            return total

        return epoch

    def make_svi(dataloader: bool):
        store.clear()
        model, guide = network(config, data.image_shape, device)
        svi = pyro.infer.SVI(
            model, guide, pyro.optim.Adam({"lr": config.lr}), pyro.infer.Trace_ELBO()
        )
        if dataloader:  # Pyro's example: a CPU DataLoader, batches copied to the device
            images = torch.utils.data.TensorDataset(data.train.cpu().float() / 255)
            loader = torch.utils.data.DataLoader(images, batch_size=256, shuffle=True)

        def epoch():
            total = 0.0
            if dataloader:
                for (x,) in loader:
                    total += svi.step(torch.bernoulli(x).to(device))
            else:
                for index in torch.randperm(n_train, generator=generator, device=device).split(256):
                    total += svi.step(data.train_batch(index, generator))
            return total

        return own_param_store(epoch)

    makers = {
        "pyro-vae": lambda: make_pyro_vae("jit"),
        "pyro-vae-eager": lambda: make_pyro_vae("eager"),
        "pyro-vae-bf16": lambda: make_pyro_vae("jit", "bf16"),
        "pyro-vae-unchecked": lambda: make_pyro_vae("jit", check_finite=False),
        "hand-written": lambda: make_handwritten(fused=True),
        "hand-written-foreach": lambda: make_handwritten(fused=False),
        "pyro-svi": lambda: make_svi(dataloader=False),
        "pyro-example": lambda: make_svi(dataloader=True),
    }
    unknown = [name for name in args.loops if name not in makers]
    if unknown:
        sys.exit(f"unknown loop(s) {unknown}; valid: {', '.join(makers)}")
    epochs = {name: makers[name]() for name in args.loops}
    times = {name: [] for name in args.loops}
    losses = {name: [] for name in args.loops}
    peak = {name: 0 for name in args.loops}  # bytes of device memory, on a GPU
    # Pyro's example disables distribution validation; every loop here runs without it.
    with pyro.validation_enabled(False):
        for round_ in range(args.warmup + args.epochs):
            for name, epoch in epochs.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats(device)
                start = time.perf_counter()
                total = float(epoch())  # float(): waits for the device
                seconds = time.perf_counter() - start
                losses[name].append(total / n_train)
                if round_ >= args.warmup:
                    times[name].append(seconds)
                if device.type == "cuda":
                    peak[name] = max(peak[name], torch.cuda.max_memory_allocated(device))

    print()
    reference = statistics.median(times["hand-written"]) if "hand-written" in times else None
    print(
        f"| loop | s/epoch (median of {args.epochs}) | min | images/s | vs hand-written "
        "| peak GPU memory | final train loss (nats) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.loops:
        median = statistics.median(times[name])
        ratio = f"{median / reference:.2f}x" if reference else "-"
        memory = f"{peak[name] / 2**20:.0f} MiB" if device.type == "cuda" else "-"
        print(
            f"| {name} | {median:.3f} | {min(times[name]):.3f} | {n_train / median:,.0f} "
            f"| {ratio} | {memory} | {losses[name][-1]:.2f} |"
        )


if __name__ == "__main__":
    main()
