"""Check a VampPrior run's log p̂(x) outside the toolkit (issue 13, row D).

Recomputes the K = 5000 importance estimate of the first N test images with plain
torch.distributions in float64, no Pyro: q(z|x) from the guide's posterior, the prior
written out as log (1/K') Σ_k N(z; μ(u_k), σ(u_k)) over the pseudo-inputs u_k, Bernoulli
pixels from the decoder's logits; and compares it with the run's
evaluation_per_datapoint.csv (``pyro-vae evaluate RUN``). Fresh draws, so the per-image
differences are Monte Carlo noise; their mean should be zero within its standard error.

    python scripts/check_vamp_bruteforce.py RUN N
"""

import argparse
import csv
import math
from pathlib import Path

import torch
from pyro_vae.models.priors import VampPrior
from torch.distributions import Bernoulli, Normal

from pyro_vae.errors import UserInputError
from pyro_vae.run import load_run

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("run_dir", type=Path, help="a trained and evaluated --prior vamp run")
parser.add_argument("images", type=int, help="how many of the first test images to check")
args = parser.parse_args()
torch.set_num_threads(1)
K = 5000

csv_path = args.run_dir / "evaluation_per_datapoint.csv"
if not csv_path.is_file():
    parser.error(f"{csv_path} is missing: run `pyro-vae evaluate {args.run_dir}` first")
with csv_path.open() as rows:
    ref = {int(r["index"]): float(r["log_likelihood"]) for r in csv.DictReader(rows)}
n = args.images
if not 1 <= n <= len(ref):
    parser.error(f"images must be between 1 and the {len(ref)} images evaluated, got {n}")
try:
    run = load_run(args.run_dir, device="cpu")
except UserInputError as error:
    parser.error(str(error))
model, guide = run.model.eval(), run.guide.eval()
if not isinstance(getattr(model, "prior", None), VampPrior) or run.config.model != "vae":
    parser.error(f"{args.run_dir} is not a one-layer --prior vamp run (row D's kind)")
if run.config.guide != "diag-normal" or run.config.likelihood != "bernoulli":
    parser.error(f"{args.run_dir}: this check needs --guide diag-normal --likelihood bernoulli")
x_all = run.data.test[:n].float().div(255)
g = torch.Generator().manual_seed(123)
ours, theirs = [], []
with torch.no_grad():
    u = model.prior.inputs()
    pu = guide.posterior(u).base_dist
    mu_k, sd_k = pu.loc.double(), pu.scale.double()  # (500, 40)
    for i in range(n):
        x = x_all[i : i + 1]
        q = guide.posterior(x).base_dist
        eps = torch.randn(K, q.loc.shape[-1], generator=g)
        z = q.loc + q.scale * eps  # (K, 40)
        log_q = Normal(q.loc.double(), q.scale.double()).log_prob(z.double()).sum(-1)
        comp = Normal(mu_k[None], sd_k[None]).log_prob(z.double()[:, None]).sum(-1)  # (K, 500)
        log_p_z = torch.logsumexp(comp, -1) - math.log(mu_k.shape[0])
        logits = model.decoder(z).reshape(K, -1).double()
        log_px_z = (
            Bernoulli(logits=logits).log_prob(x.reshape(1, -1).double().expand(K, -1)).sum(-1)
        )
        lw = log_px_z + log_p_z - log_q
        ours.append((torch.logsumexp(lw, 0) - math.log(K)).item())
        theirs.append(ref[i])
o, t = torch.tensor(ours), torch.tensor(theirs)
d = o - t
print(
    f"{n} images: brute force {o.mean():.3f}, evaluate {t.mean():.3f}, "
    f"difference {d.mean():.4f} +- {d.std() / math.sqrt(n):.4f} (max |d| {d.abs().max():.3f})"
)
