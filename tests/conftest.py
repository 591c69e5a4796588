import os

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("ERASEKIT_TEST_THREADS", "2")))  # 1 when sharing the cores
FAMILIES = ("sd1", "sd2", "sdxl")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Tiny random-weight pipelines of each family, saved with save_pretrained, built once per session."""
    from erasekit.testing.tiny import build
    root = tmp_path_factory.mktemp("tiny")
    return {family: build(family, root / family) for family in FAMILIES}


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture
def tiny_pipe(tiny_dirs, family):
    """A freshly loaded tiny pipeline (through the same loader a user's model takes)."""
    from erasekit import load_pipeline
    return load_pipeline(tiny_dirs[family])
