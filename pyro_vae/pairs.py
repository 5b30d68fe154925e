"""Training a Pyro model/guide pair that a user wrote, with the toolkit's training loop.

The registry builds its pairs as ``nn.Module``s; a user's pair is two callables, ``model(x)``
and ``guide(x)`` (bound methods of an ``nn.Module`` as in Pyro's VAE tutorial, ``PyroModule``s,
or plain functions of ``pyro.param``s), with every sample site in ``pyro.plate(data_plate,
x.shape[0])``. :func:`train_pair` gives such a pair the loop of ``pyro-vae train``
(``pyro_vae.trainer``): the JIT-traced loss checked against the eager one, fused Adam, the
finiteness check, atomic checkpoints with bit-exact resume on the CPU, learning-rate
schedules, early stopping, metrics.jsonl, curves.png, the progress bar and torchrun.

The parameters trained are exactly those Pyro's SVI would train: the unconstrained values of
the ``pyro.param`` sites (``pyro.module`` parameters included) that a first trace of guide and
model finds in Pyro's param store or creates there. :class:`PyroProgram` holds them under
their Pyro names, so a checkpoint refuses, naming the difference, to load into a pair whose
parameter names or shapes differ.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn

from pyro_vae.checkpoint import write_atomically, write_text_atomically
from pyro_vae.config import USER_PAIR, USER_TENSOR, TrainConfig, validate
from pyro_vae.data import ImageData
from pyro_vae.distributed import process_group
from pyro_vae.errors import UserInputError
from pyro_vae.evaluation import fixed_seed, program_modules
from pyro_vae.importance import check_pair
from pyro_vae.plugins import import_plugins
from pyro_vae.run import Run, resolve_device
from pyro_vae.run_folder import RunFolder

USER_BINARIZE = ("dynamic", "none")


class PyroProgram(nn.Module):
    """A user's Pyro model or guide as an ``nn.Module``: calling it runs the program.

    Its parameters are the unconstrained ``pyro.param`` values the program uses (those of
    its ``pyro.module``s included), in the order of ``names``, their Pyro names. The program
    itself is not registered as a submodule (its module's parameters would appear twice);
    :meth:`train` sets the mode of the module the program is, or is a bound method of.
    """

    def __init__(self, program: Callable, names: list[str], parameters: list[nn.Parameter]):
        super().__init__()
        object.__setattr__(self, "program", program)  # not a submodule: see the docstring
        self.names = list(names)
        self.values = nn.ParameterList(parameters)

    def forward(self, x: torch.Tensor):
        return self.program(x)

    def train(self, mode: bool = True) -> PyroProgram:
        super().train(mode)
        for module in program_modules(self.program):
            module.train(mode)
        return self

    def get_extra_state(self) -> list[str]:
        return self.names

    def set_extra_state(self, state: list[str]) -> None:
        pass  # load_state_dict has checked the names already

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load parameters saved by name; a different set of names or shapes is refused."""
        stored = state_dict.get("_extra_state")
        if not isinstance(stored, list):
            raise UserInputError("the checkpoint holds no parameter names: not a user pair's")
        shapes = {n: tuple(state_dict[f"values.{i}"].shape) for i, n in enumerate(stored)}
        ours = {n: tuple(p.shape) for n, p in zip(self.names, self.values)}
        differences = [f"{n} missing from the pair" for n in shapes if n not in ours]
        differences += [f"{n} not in the checkpoint" for n in ours if n not in shapes]
        differences += [
            f"{n}: shape {shapes[n]} in the checkpoint, {ours[n]} in the pair"
            for n in ours
            if n in shapes and shapes[n] != ours[n]
        ]
        if differences or stored != self.names:
            listed = "; ".join(differences[:3]) or "the same names in another order"
            more = f" and {len(differences) - 3} more" if len(differences) > 3 else ""
            raise UserInputError(
                f"the checkpoint's parameters do not fit this pair ({listed}{more}); "
                "pass the model and guide that wrote it"
            )
        return super().load_state_dict(state_dict, strict, assign)


def program_parameters(
    model: Callable, guide: Callable, x: torch.Tensor
) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter]]:
    """The parameters of guide and model by Pyro name, found by tracing both on ``x``.

    A ``pyro.param`` created from a plain tensor is replaced in Pyro's param store by an
    ``nn.Parameter`` on the same storage (``ParamStoreDict.set_state``), so that the trainer's
    optimizer, JIT trace and DDP see the very tensor the program reads. A parameter that
    guide and model share (by name or as the same tensor) is the guide's.
    """
    with torch.no_grad():  # one trace of each records its param sites beside its samples
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    store = pyro.get_param_store()
    stored = store.get_state()
    found = []
    for trace in (guide_trace, model_trace):
        found.append([name for name, site in trace.nodes.items() if site["type"] == "param"])
    replaced = {}
    for name in {n for names in found for n in names}:
        value = stored["params"][name]
        if not isinstance(value, nn.Parameter):
            replaced[name] = nn.Parameter(value.detach())
    if replaced:
        constraints = {name: stored["constraints"][name] for name in replaced}
        store.set_state({"params": replaced, "constraints": constraints})
    params = store.get_state()["params"]
    _refuse_unregistered_modules(
        {"guide": guide, "model": model}, {id(v) for v in params.values()}, set(found[0] + found[1])
    )
    guide_params = {name: params[name] for name in found[0]}
    shared = {id(value) for value in guide_params.values()}
    model_params = {name: params[name] for name in found[1] if id(params[name]) not in shared}
    return model_params, guide_params


def _refuse_unregistered_modules(
    programs: dict[str, Callable], registered: set[int], traced: set[str]
) -> None:
    """A module of a program whose parameters Pyro does not know would train frozen: the
    program forgot ``pyro.module``, or called it where Pyro's param store already held
    values of those names (``traced``: the param sites the programs' traces read), which
    ``pyro.module`` keeps in place of the module's own. Refused before training, naming
    the module and the fix."""
    for which, program in programs.items():
        for module in program_modules(program):
            loose = [n for n, p in module.named_parameters() if id(p) not in registered]
            suffixes = {k: k.split("$$$")[-1] for k in sorted(traced)}
            stale = [k for k, end in suffixes.items() if any(n.endswith(end) for n in loose)]
            if loose and stale:
                raise UserInputError(
                    f"Pyro's param store already holds {stale[0]!r}, left by an earlier pair "
                    f"of the same names, and pyro.module kept it in place of the {which}'s "
                    f"{type(module).__name__}: call pyro.clear_param_store() before building "
                    "the pair (or load a trained one with pyro_vae.load_pair)"
                )
            if loose:
                raise UserInputError(
                    f"the {which}'s module {type(module).__name__} has parameters Pyro does not "
                    f"know ({', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''}): they "
                    f"would not train; call pyro.module('{which}', self) at the start of the "
                    f"{which}"
                )


class TensorData(ImageData):
    """Splits of a user's tensor of images, kept as the floats they are (no 0..255 scale)."""

    def train_batch(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = self.train[index]
        return torch.bernoulli(x, generator=generator) if self.binarize == "dynamic" else x

    def eval_batches(self, split: str, batch_size: int) -> Iterator[torch.Tensor]:
        yield from self.split(split).split(batch_size)

    def inputs(self, name: str) -> torch.Tensor:
        return self.split(name)


def tensor_data(
    images: torch.Tensor,
    test_images: torch.Tensor | None,
    config: TrainConfig,
    device: torch.device,
) -> TensorData:
    """Training (the last ``config.valid_size`` of them validate), validation and test
    splits of the user's images, on ``device``."""
    for name, value in (("images", images), ("test_images", test_images)):
        if value is None and name == "test_images":
            continue
        if not isinstance(value, torch.Tensor) or value.ndim < 2 or value.shape[0] < 1:
            raise UserInputError(f"{name} must be a non-empty (N, ...) tensor")
        if not torch.isfinite(value.float()).all():
            raise UserInputError(f"{name} hold NaN or infinite values; clean the data first")
    n_valid = config.valid_size
    if not n_valid < images.shape[0]:
        raise UserInputError(
            f"valid_size {n_valid} leaves none of the {images.shape[0]} images to train on; "
            f"use a valid_size below {images.shape[0]}"
        )
    if test_images is not None and test_images.shape[1:] != images.shape[1:]:
        raise UserInputError(
            f"test_images have shape {tuple(test_images.shape[1:])} per image, the training "
            f"images {tuple(images.shape[1:])}"
        )
    binarize = config.binarize or "none"
    if binarize not in USER_BINARIZE:
        raise UserInputError(
            f"binarize {binarize!r} is not offered for a tensor of images; valid modes: "
            f"{', '.join(USER_BINARIZE)} (binarize once yourself for a static binarization)"
        )
    values = images.to(device, torch.get_default_dtype())
    if binarize == "dynamic" and not ((values >= 0) & (values <= 1)).all():
        raise UserInputError("binarize 'dynamic' needs values in [0, 1] (Bernoulli means)")
    cut = values.shape[0] - n_valid
    train, valid = values[:cut], values[cut:]
    test = (
        test_images.to(device, values.dtype)
        if test_images is not None
        else values.new_zeros((0, *values.shape[1:]))
    )
    if binarize == "dynamic":  # the held-out splits are binarized once, with fixed seeds
        generator = torch.Generator(device=device)
        valid = torch.bernoulli(valid, generator=generator.manual_seed(1))
        test = torch.bernoulli(test.clamp(0, 1), generator=generator.manual_seed(2))

    def unlabelled(split: torch.Tensor) -> torch.Tensor:
        return torch.full((split.shape[0],), -1, dtype=torch.long, device=device)

    return TensorData(
        USER_TENSOR, binarize, train, valid, test, *map(unlabelled, (train, valid, test))
    )


# Fields that shape the registry's networks, with the only value a user pair takes and what
# to do instead.
_STARTS_AS_GIVEN = (
    "a user pair starts from the parameters it is given (initialize your own networks as "
    "you build them)"
)
REGISTRY_NETWORK_FIELDS = {
    "precision": (
        "fp32",
        "a user pair trains in fp32 (use torch.autocast inside your own networks)",
    ),
    "weight_init": ("torch", _STARTS_AS_GIVEN),
    "output_bias": ("torch", _STARTS_AS_GIVEN),
}


def pair_config(config: TrainConfig) -> TrainConfig:
    """``config`` as a user pair's run stores it, checked (no validation split unless asked)."""
    values = {**config.to_dict(), "model": USER_PAIR, "dataset": USER_TENSOR}
    values["valid_size"] = values["valid_size"] or 0
    config = TrainConfig.from_dict(values)
    validate(config)
    for name, (default, instead) in REGISTRY_NETWORK_FIELDS.items():
        value = getattr(config, name)
        if value != default:
            raise UserInputError(f"{name} {value!r} applies to the registry's networks; {instead}")
    return config


def train_pair(
    model: Callable,
    guide: Callable,
    images: torch.Tensor,
    config: TrainConfig | None = None,
    run_dir: str | Path | None = None,
    *,
    test_images: torch.Tensor | None = None,
    data_plate: str = "data",
    progress: bool = True,
    resume: bool = False,
    builder: str | None = None,
    decoder_mean: Callable[..., torch.Tensor] | None = None,
) -> Run:
    """Train a user's Pyro ``model``/``guide`` on ``images`` (``(N, ...)``) with the toolkit's
    loop, writing a run folder; returns the :class:`~pyro_vae.run.Run`.

    ``config`` (a :class:`~pyro_vae.config.TrainConfig`) supplies the training fields:
    ``epochs``, ``batch_size``, ``lr`` and its schedule, ``elbo`` and ``num_particles``,
    ``kl_warmup_epochs``, ``early_stopping``, ``valid_size`` (the last N images validate;
    default none), ``binarize`` (``"none"``, the default, or ``"dynamic"``: the images are
    Bernoulli means, drawn afresh each epoch), ``compile``, ``clip_norm``, ``seed``,
    ``device`` and the checkpoint fields; the registry's fields (prior, decoder, ...) do not
    apply. The images move to the config's device; the pair's modules must be there.
    ``test_images`` are evaluated every epoch as the test ELBO (never used to choose).

    ``resume=True`` continues the run in ``run_dir`` from its checkpoint: pass the same
    kind of model and guide, freshly built; their parameters are replaced by the
    checkpoint's, bit-identical on the CPU to the run left alone.

    ``builder``, ``"module:function"``, names a function of no arguments that builds the
    pair afresh (:class:`PairParts`, or ``(model, guide)``): with it the run folder is a
    whole run that ``pyro-vae evaluate``/``sample``/``viz`` and :func:`load_run` rebuild
    (the test images are kept in it). Without it, :func:`load_pair` gives the trained pair
    back to code that builds it. Samples and reconstructions need a ``decoder_mean``
    (:class:`PairParts`), here and from the builder: without one they are skipped with a
    note.
    """
    from pyro_vae.trainer import Trainer  # the trainer imports this module's users

    state = None
    if resume:
        if run_dir is None:
            raise UserInputError("resume needs the run folder to continue")
        run_dir = Path(run_dir)
        asked = pair_config(config) if config is not None else None
        config, state = RunFolder(run_dir).resume_state(asked)
        if config.model != USER_PAIR:
            raise UserInputError(
                f"{run_dir} holds a registry run ({config.model}); continue it with "
                f"pyro-vae train --resume {run_dir}"
            )
    config = pair_config(config or TrainConfig())
    if builder is not None:
        _builder_function(builder)  # refused now, not when the run is reloaded
    device = resolve_device(config.device)
    data = tensor_data(images, test_images, config, device)
    probe = data.train[: min(2, data.train.shape[0])]
    if data.binarize == "dynamic":
        probe = probe.round()
    with fixed_seed(config.seed, device), pyro.validation_enabled(True):
        check_pair(model, guide, probe, data_plate)
        model_params, guide_params = program_parameters(model, guide, probe)
    modules = (
        PyroProgram(model, list(model_params), list(model_params.values())),
        PyroProgram(guide, list(guide_params), list(guide_params.values())),
    )
    if decoder_mean is not None:  # samples.png and reconstructions.png
        modules = (DecodedPair(modules[0], decoder_mean, probe.shape[1:]), modules[1])
    if not any(p.requires_grad for m in modules for p in m.parameters()):
        raise UserInputError(
            "the pair has no parameters to train: register networks with pyro.module, or "
            "use pyro.param (or write them as PyroModules)"
        )
    pyro.set_rng_seed(config.seed)  # the run's latent draws, as for a registry run
    with process_group(device) as group:
        trainer = Trainer.assemble(config, run_dir, group, data, *modules, state, resume)
        if group.is_main:
            write_pair_record(trainer.folder, probe, data, data_plate, builder, resume)
        return trainer.fit(progress)


# ---------------------------------------------------------------------------------------------
# Reloading a user pair's run: load_pair, and whole runs through the pair's builder

PAIR_NAME = "pair.json"  # the image shape, data plate and builder of a user pair's run
TEST_IMAGES_NAME = "test_images.pt"  # its test split, as trained against (binarized once)


@dataclass
class PairParts:
    """What a pair builder (``train_pair(..., builder="module:function")``) returns.

    ``decoder_mean(**latents)`` maps the latent sites' values, by site name, to E[x | z] in
    the images' shape: with it, ``pyro-vae sample``/``viz`` draw samples (z ~ p(z)) and
    reconstructions (z ~ q(z|x)); without it they are skipped with a note."""

    model: Callable
    guide: Callable
    decoder_mean: Callable[..., torch.Tensor] | None = None


def write_pair_record(
    folder: RunFolder,
    probe: torch.Tensor,
    data: TensorData,
    data_plate: str,
    builder: str | None,
    resume: bool,
) -> None:
    """``pair.json`` (and, with a builder and test images, ``test_images.pt``) in a user
    pair's run folder; a resumed run keeps the builder it was written with unless given one."""
    path = folder.path / PAIR_NAME
    if resume and path.is_file() and builder is None:
        builder = json.loads(path.read_text()).get("builder")
    record = {"image_shape": list(probe.shape[1:]), "data_plate": data_plate, "builder": builder}
    write_text_atomically(path, json.dumps(record, indent=2) + "\n")
    if builder is not None and len(data.test):
        binary = bool(((data.test == 0) | (data.test == 1)).all())
        test = data.test.bool() if binary else data.test
        write_atomically(
            folder.path / TEST_IMAGES_NAME, lambda f: torch.save({"test": test.cpu()}, f)
        )


def read_pair_record(run_dir: Path) -> dict:
    path = Path(run_dir) / PAIR_NAME
    try:
        record = json.loads(path.read_text())
        shape = [int(n) for n in record["image_shape"]]
        str(record["data_plate"])
    except FileNotFoundError:
        raise UserInputError(
            f"{run_dir} holds no {PAIR_NAME}: it was written before user-pair runs kept "
            "their image shape; continue it once with train_pair(..., resume=True)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserInputError(f"{path} is unreadable or malformed ({error})") from None
    return {**record, "image_shape": shape}


def _builder_function(builder: str) -> Callable[[], object]:
    module_name, _, name = builder.partition(":")
    if not module_name or not name:
        raise UserInputError(
            f"builder {builder!r} is not 'module:function' (say 'mymodels:build_pair')"
        )
    import_plugins([module_name], needed_by="this user pair's run")
    function = getattr(importlib.import_module(module_name), name, None)
    if not callable(function):
        raise UserInputError(f"builder {builder!r}: module {module_name} has no function {name}")
    return function


def _parts(built: object, builder: str) -> PairParts:
    if isinstance(built, PairParts):
        return built
    if isinstance(built, tuple) and len(built) == 2 and all(map(callable, built)):
        return PairParts(*built)
    raise UserInputError(
        f"builder {builder!r} returned {type(built).__name__}; return "
        "pyro_vae.PairParts(model, guide, decoder_mean) or (model, guide)"
    )


def _trained_programs(
    run_dir: Path, model: Callable, guide: Callable, checkpoint: str, device: torch.device
) -> tuple[PyroProgram, PyroProgram, dict, str]:
    """The pair's programs with the checkpoint's parameters; the pair record; their source."""
    folder = RunFolder(run_dir)
    config = folder.read_existing_config()
    if config.model != USER_PAIR:
        raise UserInputError(
            f"{run_dir} holds a registry run ({config.model}); load it with pyro_vae.load_run"
        )
    record = read_pair_record(folder.path)
    state, source = folder.read_parameters(checkpoint)
    probe = torch.zeros(2, *record["image_shape"], device=device)
    # Values another pair of these names left in Pyro's param store would win over the fresh
    # modules' (pyro.module keeps the stored ones): dropped, the checkpoint refills them
    store = pyro.get_param_store()
    for key in ("model", "guide"):
        for name in state.get(key, {}).get("_extra_state") or []:
            if name in store:
                del store[name]
    # Traced once, as training did, so the param store holds every parameter by its name
    try:
        with fixed_seed(config.seed, device), pyro.validation_enabled(False):
            model_params, guide_params = program_parameters(model, guide, probe)
    except (RuntimeError, ValueError, TypeError) as error:
        reason = " ".join(str(error).split())[:200]
        raise UserInputError(
            f"the pair does not run on images of the run's shape {tuple(probe.shape[1:])} "
            f"({type(error).__name__}: {reason}); pass the model and guide that wrote {run_dir}"
        ) from None
    programs = (
        PyroProgram(model, list(model_params), list(model_params.values())),
        PyroProgram(guide, list(guide_params), list(guide_params.values())),
    )
    for program, key in zip(programs, ("model", "guide")):
        with torch.no_grad():
            program.load_state_dict(state[key])
        program.eval()
    return *programs, record, source


def load_pair(
    run_dir: str | Path,
    model: Callable,
    guide: Callable,
    checkpoint: str = "best",
    device: str | None = None,
) -> tuple[Callable, Callable]:
    """The trained ``model`` and ``guide`` of the user-pair run in ``run_dir``, without its
    training images: pass the pair freshly built as it was for :func:`train_pair`; their
    parameters (Pyro's param store, and the modules registered with ``pyro.module``) take
    the checkpoint's values, refused with the names where they do not fit. ``checkpoint``:
    "best" (best.pt where early stopping wrote one) or "last". Returns ``(model, guide)``,
    their modules in eval mode."""
    run_dir = Path(run_dir)
    config = RunFolder(run_dir).read_existing_config()
    target = resolve_device(device or config.device)
    _trained_programs(run_dir, model, guide, checkpoint, target)
    return model, guide


class DecodedPair(PyroProgram):
    """A user pair's model with the builder's ``decoder_mean``: the ``sample_means`` and
    ``reconstruct`` that ``pyro-vae sample`` and the run's images ask of a model."""

    def __init__(self, program: PyroProgram, decoder_mean: Callable, image_shape):
        super().__init__(program.program, program.names, list(program.values))
        object.__setattr__(self, "decoder_mean", decoder_mean)
        self.image_shape = tuple(image_shape)

    def _latents(self, trace) -> dict[str, torch.Tensor]:
        return {name: site["value"] for name, site in trace.nodes.items()
                if site["type"] == "sample" and not site["is_observed"]
                and not site_is_subsample(site)}  # fmt: skip

    def sample_means(self, num: int) -> torch.Tensor:
        """E[x | z] of ``num`` draws z ~ p(z): the model run forward (its observed site
        given zeros it does not use for z)."""
        x = self.values[0].new_zeros(num, *self.image_shape) if len(self.values) else (
            torch.zeros(num, *self.image_shape))  # fmt: skip
        with torch.no_grad():
            trace = poutine.trace(self.program).get_trace(x)
            return self.decoder_mean(**self._latents(trace)).reshape(num, *self.image_shape)

    def reconstruct(self, guide: PyroProgram, x: torch.Tensor) -> torch.Tensor:
        """E[x | z] of one draw z ~ q(z | x) per image."""
        with torch.no_grad():
            trace = poutine.trace(guide.program).get_trace(x)
            return self.decoder_mean(**self._latents(trace)).reshape(x.shape)


def load_user_run(run_dir: Path, checkpoint: str = "best", device: str | None = None) -> Run:
    """A user pair's run rebuilt through the builder it was trained with
    (:func:`train_pair`'s ``builder``), its test images from the run folder."""
    folder = RunFolder(run_dir)
    config = folder.read_existing_config()
    record = read_pair_record(folder.path)
    if not record.get("builder"):
        raise UserInputError(
            f"{run_dir} holds a run of a user's own model/guide pair trained without a "
            "builder: get it back with pyro_vae.load_pair(run_dir, model, guide), or train "
            "with train_pair(..., builder='module:function') so that pyro-vae can rebuild it"
        )
    if device is not None:
        config.device = device
    target = resolve_device(config.device)
    parts = _parts(_builder_function(record["builder"])(), record["builder"])
    model, guide, record, source = _trained_programs(
        folder.path, parts.model, parts.guide, checkpoint, target
    )
    if parts.decoder_mean is not None:
        model = DecodedPair(model, parts.decoder_mean, record["image_shape"])
    test = torch.zeros(0, *record["image_shape"])
    stored = folder.path / TEST_IMAGES_NAME
    if stored.is_file():
        try:
            test = torch.load(stored, map_location="cpu", weights_only=True)["test"]
        except Exception as error:  # a truncated or foreign file: one line
            reason = " ".join(str(error).split())[:300]
            raise UserInputError(f"{stored} is unreadable ({reason})") from None
    empty = test.new_zeros((0, *test.shape[1:])).float()
    labels = torch.full((test.shape[0],), -1, dtype=torch.long)
    data = TensorData(USER_TENSOR, config.binarize or "none", empty.to(target), empty.to(target),
                      test.float().to(target), labels[:0].to(target), labels[:0].to(target),
                      labels.to(target))  # fmt: skip
    return Run(config, model, guide, data, folder.path, folder.read_history(), source)
