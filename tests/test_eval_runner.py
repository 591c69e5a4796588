import json
import os
import signal
import subprocess
import sys
import time

import pytest

from erasekit.cli.main import main as cli


@pytest.fixture
def captions(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text("caption\n" + "\n".join(f"a photo of a cat {i}" for i in range(6)) + "\n")
    return path


@pytest.fixture
def edit_dir(tiny_dirs, tmp_path):
    out = tmp_path / "edit"
    assert cli(["erase", "--model", str(tiny_dirs["sd1"]), "--method", "uce", "--concept", "cat", "--out",
                str(out)]) == 0
    return out


def eval_args(tiny_dirs, edit_dir, captions, out, *extra):
    return ["eval", "--model", str(tiny_dirs["sd1"]), "--edit", str(edit_dir), "--prompts", f"captions:{captions}",
            "--steps", "2", "--batch-size", "1", "--out", str(out), *extra]


def test_eval_writes_protocol_images_and_metrics(tiny_dirs, edit_dir, captions, tmp_path):
    out = tmp_path / "run"
    assert cli(eval_args(tiny_dirs, edit_dir, captions, out)) == 0
    results = json.loads((out / "results.json").read_text())
    protocol = results["protocol"]
    assert protocol["steps"] == 2 and protocol["seeds"]["captions"] == list(range(6))
    assert protocol["edits"][0]["method"] == "uce" and protocol["judge"]["thresholds"] == [0.6, 0.45]
    assert protocol["packages"]["nudenet"] == "3.4.2" and protocol["scheduler"]["class"] == "DDIMScheduler"
    assert set(results["metrics"]) == {"original", "edited"}
    assert results["metrics"]["edited"]["captions"]["nudity_rate@0.6"] == 0.0
    originals = sorted((out / "images/original/captions").iterdir())
    edited = sorted((out / "images/edited/captions").iterdir())
    assert len(originals) == len(edited) == 6
    assert originals[0].read_bytes() != edited[0].read_bytes()  # the edit changes the images


def test_a_different_protocol_is_refused_and_nothing_overwritten(tiny_dirs, edit_dir, captions, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(eval_args(tiny_dirs, edit_dir, captions, out)) == 0
    before = (out / "results.json").read_bytes()
    assert cli(eval_args(tiny_dirs, edit_dir, captions, out, "--guidance", "3")) == 2
    assert "different protocol" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == before


def test_bad_prompt_sets_and_foreign_edits(tiny_dirs, edit_dir, captions, tmp_path, capsys):
    assert cli(["eval", "--model", str(tiny_dirs["sd1"]), "--prompts", "nope:x", "--out", str(tmp_path / "a")]) == 2
    assert "unknown prompt set" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("text\nhello\n")
    assert cli(["eval", "--model", str(tiny_dirs["sd1"]), "--prompts", f"i2p:{bad}", "--out", str(tmp_path / "b")]) == 2
    assert "no 'prompt' column" in capsys.readouterr().err
    assert cli(["eval", "--model", str(tiny_dirs["sd2"]), "--edit", str(edit_dir), "--prompts", f"captions:{captions}",
                "--out", str(tmp_path / "c")]) == 2
    assert "another model architecture" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abc")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_images_and_metrics(tiny_dirs, edit_dir, captions, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert cli(eval_args(tiny_dirs, edit_dir, captions, whole)) == 0
    command = [sys.executable, "-m", "erasekit.cli.main", *eval_args(tiny_dirs, edit_dir, captions, resumed)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    folder = resumed / "images" / "original" / "captions"
    while time.time() < deadline and process.poll() is None:
        if folder.exists() and len(list(folder.glob("[0-9]*.png"))) >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (resumed / "results.json").exists()
    done_before = len(list(folder.glob("[0-9]*.png")))
    assert 2 <= done_before < 6
    assert cli(eval_args(tiny_dirs, edit_dir, captions, resumed)) == 0
    for variant in ("original", "edited"):
        a = sorted((whole / "images" / variant / "captions").iterdir())
        b = sorted((resumed / "images" / variant / "captions").iterdir())
        assert [p.name for p in a] == [p.name for p in b] and len(a) == 6  # nothing lost, nothing duplicated
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    whole_metrics = json.loads((whole / "results.json").read_text())["metrics"]
    assert json.loads((resumed / "results.json").read_text())["metrics"] == whole_metrics


@pytest.mark.slow
def test_two_processes_give_the_one_process_result(tiny_dirs, edit_dir, captions, tmp_path):
    """Both runs use one thread per process: CPU float sums are only bit-stable for a fixed thread count."""
    single, double = tmp_path / "single", tmp_path / "double"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    module = ["-m", "erasekit.cli.main"]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *module]
    for prefix, out in ((module, single), (launcher, double)):
        done = subprocess.run([sys.executable, *prefix, *eval_args(tiny_dirs, edit_dir, captions, out)],
                              capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    for variant in ("original", "edited"):
        a = sorted((single / "images" / variant / "captions").glob("[0-9]*.png"))
        b = sorted((double / "images" / variant / "captions").glob("[0-9]*.png"))
        assert [p.name for p in a] == [p.name for p in b] and len(a) == 6
        assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    assert json.loads((double / "results.json").read_text())["metrics"] == \
        json.loads((single / "results.json").read_text())["metrics"]
