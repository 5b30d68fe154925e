"""The training loop's callbacks: every moment is heard, a resumed run's too."""

from pyro_vae import train
from pyro_vae.callbacks import Callback
from tests.conftest import small_config


class Recorder(Callback):
    def __init__(self):
        self.heard = []

    def on_train_start(self, trainer):
        self.heard.append(("start", len(trainer.history)))

    def on_epoch_end(self, trainer, row):
        assert row is trainer.history[-1]
        self.heard.append(("epoch", row["epoch"]))

    def on_train_end(self, trainer):
        self.heard.append(("end", trainer.history[-1]["epoch"]))


def test_a_callback_hears_every_epoch_and_the_end_after_the_metrics_file(tmp_path):
    recorder = Recorder()
    config = small_config(epochs=2, tensorboard=False)
    run = train(config, tmp_path / "run", progress=False, callbacks=[recorder])
    assert recorder.heard == [("epoch", 0), ("start", 1), ("epoch", 1), ("epoch", 2), ("end", 2)]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3
    resumed = Recorder()
    train(small_config(epochs=3, tensorboard=False), run.run_dir, False, True, [resumed])
    assert resumed.heard == [("start", 3), ("epoch", 3), ("end", 3)]
