from html.parser import HTMLParser

from pyro_vae.cli import main


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.references, self.tags, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href"):
                self.references.append(value)

    def handle_data(self, data):
        self.text.append(data)


def test_report_is_self_contained_and_complete(trained_run, capsys):
    run_dir = trained_run.run_dir
    assert main(["evaluate", str(run_dir), "--num-samples", "50", "--quiet"]) == 0
    assert main(["viz", str(run_dir)]) == 0
    assert "active units:" in capsys.readouterr().out
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    parser = Collector()
    parser.feed(page)
    parser.close()
    text = " ".join(parser.text)
    for section in ("Configuration", "Training", "Evaluation", "Latent space"):
        assert section in text
    assert "log_likelihood" in text and "latent dimensions are active" in text
    # Every image is embedded: the page references no file, so it reads offline anywhere.
    assert parser.references and all(
        ref.startswith("data:image/png;base64,") for ref in parser.references
    )
    assert parser.tags.count("img") == 10  # curves, k̂, and the eight viz images
    # the config as it was used: ε as it is (not 0.0000), the binarization resolved
    assert "1e-08" in text and "0.0000" not in text
    assert "binarize dynamic" in " ".join(text.split()) or "dynamic" in parser.text
