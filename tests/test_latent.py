import json
import math

import pytest
import torch

from pyro_vae import visualize
from pyro_vae.cli import main
from pyro_vae.latent import (
    attribute_vector,
    extremes,
    latent_stats,
    lerp,
    pca_2d,
    slerp,
    traversal_codes,
)
from tests.linear_gaussian import GaussianGuide, LinearGaussian


def test_lerp_and_slerp_end_points_and_norms():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    for path in (lerp(a, b, 5), slerp(a, b, 5)):
        assert torch.allclose(path[0], a) and torch.allclose(path[-1], b)
    # The great circle keeps the norm of codes of equal norm; the chord dips inside.
    assert torch.allclose(slerp(a, b, 5).norm(dim=1), torch.full((5,), 3.0))
    assert lerp(a, b, 5).norm(dim=1)[2] == pytest.approx(3 / math.sqrt(2))
    assert torch.allclose(slerp(a, 2 * a, 3), lerp(a, 2 * a, 3))  # parallel: falls back


def test_traversal_moves_one_dimension_per_row():
    codes = traversal_codes(torch.zeros(4), torch.tensor([2, 0]), torch.ones(4), steps=3)
    assert codes.shape == (6, 4)
    assert codes[:3, 2].tolist() == [-3.0, 0.0, 3.0] and codes[:3, [0, 1, 3]].abs().sum() == 0
    assert codes[3:, 0].tolist() == [-3.0, 0.0, 3.0] and codes[3:, 1:].abs().sum() == 0


def test_active_units_and_kl_on_a_model_with_a_collapsed_dimension():
    lg = LinearGaussian()
    with torch.no_grad():  # the decoder ignores z_2: its posterior is the prior
        lg.model.decoder[0].weight[:, 2] = 0
    lg.W[:, 2] = 0
    lg.cov_post = torch.linalg.inv(torch.eye(3) + lg.W.T @ lg.W / 0.25)
    stats = latent_stats(lg.model, GaussianGuide(lg, diagonal=True), lg.sample(400))
    assert stats.active_units == 2
    assert stats.activity[2] < 1e-6 and stats.kl_per_dim[2] < 1e-4
    assert stats.order[-1] == 2


def test_pca_and_attribute_vector():
    points = torch.randn(200, 5) * torch.tensor([5.0, 1.0, 0.1, 0.1, 0.1])
    projected = pca_2d(points)
    assert projected.shape == (200, 2) and projected[:, 0].var() > projected[:, 1].var()
    means = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    has = torch.tensor([True, True, False, False])
    assert attribute_vector(means, has).tolist() == [2.0, -2.0]
    with pytest.raises(ValueError, match="with and without"):
        attribute_vector(means, torch.ones(4, dtype=torch.bool))
    keep, top = extremes(torch.arange(8.0))
    assert keep.tolist() == [1, 1, 0, 0, 0, 0, 1, 1] and top.tolist() == [0] * 6 + [1, 1]


def test_visualize_writes_every_image_and_the_summary(trained_run):
    report = visualize(trained_run, num_pairs=3, max_dims=4, attribute_classes=(1,))
    viz = trained_run.run_dir / "viz"
    names = {p.name for p in viz.iterdir()}
    assert {
        "samples.png",
        "samples_pixels.png",
        "reconstructions.png",
        "interpolation_linear.png",
        "interpolation_spherical.png",
        "traversals.png",
        "latent_pca.png",
        "attribute_stroke_thickness.png",
        "attribute_class_1.png",
        "latent.json",
    } <= names
    summary = json.loads((viz / "latent.json").read_text())
    # Three epochs on digits sit on the collapsed plateau, so no unit need be active yet.
    assert 0 <= summary["active_units"] <= summary["latent_dim"] == 8
    assert sorted(summary["dimensions_by_kl"]) == list(range(8))
    assert report.name == "report.html"


def test_visualize_shows_the_vamp_priors_pseudo_inputs(tmp_path):
    """A VampPrior run's viz shows its pseudo-inputs u_k (clamped ones in [0, 1])."""
    from pyro_vae import train
    from tests.conftest import small_config

    config = small_config(epochs=1, prior="vamp", prior_components=70, pseudo_inputs="hardtanh")
    run = train(config, run_dir=tmp_path / "vamp", progress=False)
    visualize(run, num_pairs=1, max_dims=2)
    picture = tmp_path / "vamp" / "viz" / "pseudo_inputs.png"
    assert picture.stat().st_size > 500
    report = (tmp_path / "vamp" / "report.html").read_text()
    assert "The first 64 of the 70 pseudo-inputs of the VampPrior" in report


def test_viz_cli_errors(trained_run, capsys):
    assert main(["viz", str(trained_run.run_dir), "--attribute-class", "42"]) == 2
    assert "no test image has label 42" in capsys.readouterr().err
    assert main(["viz", str(trained_run.run_dir), "--num-pairs", "0"]) == 2
    assert "--num-pairs must be >= 1" in capsys.readouterr().err
