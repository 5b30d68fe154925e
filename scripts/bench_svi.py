"""SVI epoch time on MNIST: pyro-vae's training loop beside other loops, in one process.

The network is that of Pyro's ``examples/vae/vae.py``: 784-400-50 MLP encoder and decoder,
softplus, batch 256, Adam(lr=1e-3), Trace_ELBO, dynamically binarized MNIST. Each loop gets
its own freshly initialized copy of the same network (and its own Pyro param store), and
the loops take turns epoch by epoch so that machine drift hits them alike.

    pyro-vae          ``Trainer.run_epoch``, the loop ``pyro-vae train`` runs, with the loss
                      and optimizer it builds: Pyro's JIT-traced Trace_ELBO
                      (pyro_vae.compiled), one fused Adam, data resident on the device, the
                      per-step check for a non-finite loss or gradient (on a GPU deferred:
                      the fused optimizer skips a bad update on the device)
    pyro-vae-eager    the same with Pyro's eager Trace_ELBO module (--compile eager)
    pyro-vae-bf16     pyro-vae with --precision bf16 (not run unless named in --loops)
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
import itertools
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import pyro.optim
import torch
from bench_common import DEFAULT_DATA_DIR, print_header
from torch.nn import functional as F
from tqdm.auto import tqdm

from pyro_vae.config import TrainConfig
from pyro_vae.data import ImageData, load_data
from pyro_vae.distributed import SINGLE
from pyro_vae.registry import build_vae
from pyro_vae.run import resolve_device
from pyro_vae.svi import adam
from pyro_vae.trainer import Position, Trainer

BATCH = 256
# Pyro's example: 784-400-50, softplus, batch 256, Adam(lr=1e-3), Trace_ELBO.
CONFIG = TrainConfig(
    dataset="mnist",
    latent_dim=50,
    hidden_dims=[400],
    activation="softplus",
    batch_size=BATCH,
    lr=1e-3,
    elbo="trace",
)

Epoch = Callable[[], object]  # one pass over the training images; returns the summed loss


@dataclasses.dataclass
class Bench:
    """What every loop shares: the training images on the device and one generator that
    draws their order and binarization."""

    data: ImageData
    generator: torch.Generator

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def n_train(self) -> int:
        return self.data.train.shape[0]

    def network(self, config: TrainConfig = CONFIG):
        model, guide = build_vae(config, self.data.image_shape)
        return model.to(self.device), guide.to(self.device)

    def batches(self):
        """A fresh random order of the training images, binarized, batch by batch."""
        order = torch.randperm(self.n_train, generator=self.generator, device=self.device)
        for index in order.split(BATCH):
            yield self.data.train_batch(index, self.generator)


def with_own_param_store(epoch: Epoch) -> Epoch:
    """``epoch`` with a Pyro param store of its own, begun as the global store stands now
    (its maker cleared it) and swapped in around each call: every Pyro loop registers its
    modules under the same names."""
    store = pyro.get_param_store()
    state = store.get_state()

    def run():
        nonlocal state
        store.clear()
        store.set_state(state)
        total = epoch()
        state = store.get_state()
        return total

    return run


def pyro_vae_loop(bench: Bench, compile_mode: str = "jit", precision: str = "fp32") -> Epoch:
    """One epoch of ``Trainer.run_epoch``, the loop ``pyro-vae train`` runs, around the loss
    and the optimizer it builds (its run folder a temporary one: no checkpoint is due)."""
    pyro.get_param_store().clear()
    config = dataclasses.replace(
        CONFIG, compile=compile_mode, precision=precision, device=bench.device.type
    )
    model, guide = bench.network(config)
    folder = tempfile.mkdtemp(prefix="bench-svi-")
    trainer = Trainer.assemble(config, Path(folder) / "run", SINGLE, bench.data, model, guide)
    assert trainer.compile_mode == compile_mode, f"the {compile_mode} path fell back"
    epochs = itertools.count(1)

    def epoch():
        with tqdm(disable=True) as bar, pyro.validation_enabled(False):
            train_elbo, _ = trainer.run_epoch(next(epochs), bar, threading.Event())
        trainer.position = Position(epochs_done=trainer.position.epochs_done + 1)
        return -train_elbo * bench.n_train  # the summed loss, as the other loops give it

    return with_own_param_store(epoch)


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


def handwritten_loop(bench: Bench, fused: bool = True) -> Epoch:
    """:func:`handwritten_loss` stepped by the fused Adam (or torch's foreach Adam)."""
    model, guide = bench.network()
    params = list(model.parameters()) + list(guide.parameters())
    if fused:
        optimizer = adam(params, CONFIG.lr)
    else:
        optimizer = torch.optim.Adam(params, lr=CONFIG.lr, foreach=True)

    def epoch():
        total = torch.zeros((), device=bench.device)
        for x in bench.batches():
            loss = handwritten_loss(model, guide, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        return total

    return epoch


def svi_loop(bench: Bench, dataloader: bool = False) -> Epoch:
    """Plain ``pyro.infer.SVI`` with ``pyro.optim.Adam``; with ``dataloader``, shaped like
    Pyro's example: a CPU DataLoader whose batches are binarized and copied to the device."""
    pyro.get_param_store().clear()
    model, guide = bench.network()
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": CONFIG.lr}), pyro.infer.Trace_ELBO())
    if dataloader:
        images = torch.utils.data.TensorDataset(bench.data.train.cpu().float() / 255)
        loader = torch.utils.data.DataLoader(images, batch_size=BATCH, shuffle=True)

    def epoch():
        if dataloader:
            return sum(svi.step(torch.bernoulli(x).to(bench.device)) for (x,) in loader)
        return sum(svi.step(x) for x in bench.batches())

    return with_own_param_store(epoch)


LOOP_MAKERS: dict[str, Callable[[Bench], Epoch]] = {
    "pyro-vae": pyro_vae_loop,
    "pyro-vae-eager": lambda bench: pyro_vae_loop(bench, "eager"),
    "pyro-vae-bf16": lambda bench: pyro_vae_loop(bench, precision="bf16"),
    "hand-written": handwritten_loop,
    "hand-written-foreach": lambda bench: handwritten_loop(bench, fused=False),
    "pyro-svi": svi_loop,
    "pyro-example": lambda bench: svi_loop(bench, dataloader=True),
}
LOOPS = ["pyro-vae", "pyro-vae-eager", "hand-written", "hand-written-foreach", "pyro-svi",
         "pyro-example"]  # fmt: skip


@dataclasses.dataclass
class Timing:
    """One loop's measurements."""

    seconds: list[float] = dataclasses.field(default_factory=list)  # timed epochs
    losses: list[float] = dataclasses.field(default_factory=list)  # per image, every epoch
    peak_bytes: int = 0  # of device memory, on a GPU


def time_loops(
    loops: dict[str, Epoch], warmup: int, epochs: int, bench: Bench
) -> dict[str, Timing]:
    """Each loop's epochs, the loops taking turns epoch by epoch so that machine drift hits
    them alike; the first ``warmup`` rounds are not timed."""
    timings = {name: Timing() for name in loops}
    cuda = bench.device.type == "cuda"
    # Pyro's example disables distribution validation; every loop here runs without it.
    with pyro.validation_enabled(False):
        for round_ in range(warmup + epochs):
            for name, epoch in loops.items():
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats(bench.device)
                start = time.perf_counter()
                total = float(epoch())  # float(): waits for the device
                seconds = time.perf_counter() - start
                timing = timings[name]
                timing.losses.append(total / bench.n_train)
                if round_ >= warmup:
                    timing.seconds.append(seconds)
                if cuda:
                    timing.peak_bytes = max(
                        timing.peak_bytes, torch.cuda.max_memory_allocated(bench.device)
                    )
    return timings


def print_table(timings: dict[str, Timing], epochs: int, bench: Bench) -> None:
    reference = timings.get("hand-written")
    reference = statistics.median(reference.seconds) if reference else None
    print(
        f"| loop | s/epoch (median of {epochs}) | min | images/s | vs hand-written "
        "| peak GPU memory | final train loss (nats) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, timing in timings.items():
        median = statistics.median(timing.seconds)
        ratio = f"{median / reference:.2f}x" if reference else "-"
        memory = f"{timing.peak_bytes / 2**20:.0f} MiB" if bench.device.type == "cuda" else "-"
        print(
            f"| {name} | {median:.3f} | {min(timing.seconds):.3f} | {bench.n_train / median:,.0f} "
            f"| {ratio} | {memory} | {timing.losses[-1]:.2f} |"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per loop")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs per loop first")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--loops", nargs="+", default=LOOPS, choices=list(LOOP_MAKERS),
                        metavar="LOOP", help=f"of: {', '.join(LOOP_MAKERS)}")  # fmt: skip
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    # All 60,000 training images (the validation split too), as in Pyro's example: 235 steps.
    grey = load_data("mnist", "none", device, args.data_dir, download=False)
    data = dataclasses.replace(grey, binarize="dynamic", train=torch.cat([grey.train, grey.valid]))
    bench = Bench(data, torch.Generator(device=device).manual_seed(0))
    print_header(device)
    print(f"MNIST train images: {bench.n_train}, batch {BATCH}, steps per epoch: "
          f"{math.ceil(bench.n_train / BATCH)}")  # fmt: skip
    pyro.set_rng_seed(0)
    loops = {name: LOOP_MAKERS[name](bench) for name in args.loops}
    timings = time_loops(loops, args.warmup, args.epochs, bench)
    print()
    print_table(timings, args.epochs, bench)


if __name__ == "__main__":
    main()
