import numpy as np
import pytest
import torch
from PIL import Image

from erasekit.shapeworld.classifier import ShapeWorldClassifier, evaluate, held_out
from erasekit.shapeworld.domain import LABELS


def test_shipped_classifier_is_accurate_on_fresh_procedural_images():
    classifier = ShapeWorldClassifier.load()
    images, labels = held_out(300, seed=99)
    accuracy = evaluate(classifier, images, labels)
    assert set(accuracy) == set(LABELS)
    assert min(accuracy.values()) >= 0.95, accuracy  # the 98 % bar is measured on 3,000 by the quality script


def test_probabilities_for_pil_images_and_arrays_agree():
    classifier = ShapeWorldClassifier.load()
    images, _ = held_out(4, seed=5)
    from_arrays = classifier.probabilities(images)
    from_pil = classifier.probabilities([Image.fromarray(im) for im in images])
    for attribute, probs in from_arrays.items():
        assert probs.shape == (4, len(LABELS[attribute]))
        torch.testing.assert_close(probs.sum(-1), torch.ones(4))
        torch.testing.assert_close(probs, from_pil[attribute])
    with torch.no_grad():
        assert np.isfinite(classifier.embed(torch.rand(2, 3, 32, 32)).numpy()).all()


def test_the_trainer_runs_on_the_training_loop_and_a_killed_run_resumes_bit_identically(tmp_path, monkeypatch,
                                                                                           kill_training_at):
    from erasekit.shapeworld.classifier.train import train
    images, labels = held_out(24, seed=1)
    settings = dict(steps=6, batch=4, seed=2, width=4, checkpoint_every=2, progress=False)
    whole = train(images, labels, folder=tmp_path / "whole", **settings)
    assert (tmp_path / "whole" / "checkpoint" / "state.json").exists() and (tmp_path / "whole" / "log.csv").exists()
    kill_training_at(3)
    with pytest.raises(KeyboardInterrupt):
        train(images, labels, folder=tmp_path / "run", **settings)
    monkeypatch.undo()
    resumed = train(images, labels, folder=tmp_path / "run", **settings)  # from the step-2 checkpoint
    expected, got = whole.state_dict(), resumed.state_dict()
    assert any("running_mean" in k for k in got)  # BatchNorm statistics are restored too
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    without_folder = train(images, labels, **settings)
    assert all(torch.equal(expected[k], without_folder.state_dict()[k]) for k in expected)


@pytest.mark.slow
def test_the_command_trains_and_saves_a_loadable_classifier(tmp_path, capsys):
    from erasekit.shapeworld.classifier.train import main
    images, labels = held_out(24, seed=1)
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    threads = torch.get_num_threads()
    try:
        main(["--data", str(tmp_path / "data.npz"), "--out", str(tmp_path / "classifier"), "--steps", "3",
              "--batch", "4", "--seed", "1", "--threads", "1", "--checkpoints", str(tmp_path / "run")])
    finally:
        torch.set_num_threads(threads)
    assert "held-out procedural accuracy" in capsys.readouterr().out
    classifier = ShapeWorldClassifier.load(tmp_path / "classifier")
    assert set(classifier.probabilities(images[:2])) == set(LABELS)
    assert (tmp_path / "run" / "checkpoint" / "state.json").exists()
