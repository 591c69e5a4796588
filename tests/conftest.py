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


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny random CLIP model and processor saved as a folder (for CLIP-score metrics and rewards)."""
    from transformers import (CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTextConfig,
                              CLIPVisionConfig)
    from erasekit.shapeworld.tokenizer import save_tokenizer
    folder = tmp_path_factory.mktemp("clip")
    tok = save_tokenizer(folder / "tok", words=["a", "red", "cat", "dog", "photo", "of"], max_length=16)
    text = CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=16, eos_token_id=tok.eos_token_id,
                          bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)) \
        .save_pretrained(folder / "clip")
    CLIPProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32},
                                                        crop_size={"height": 32, "width": 32}),
                  tokenizer=tok).save_pretrained(folder / "clip")
    return folder / "clip"


@pytest.fixture
def kill_training_at(monkeypatch):
    """kill_training_at(k): the training loop dies (KeyboardInterrupt) when it reaches optimiser step k, as a run
    killed mid-way would; undone with monkeypatch.undo()."""
    import erasekit.training.loop as loop
    step = loop._step

    def arm(index: int) -> None:
        def dies(loss_fn, tensors, optimizer, config, k):
            if k == index:
                raise KeyboardInterrupt
            return step(loss_fn, tensors, optimizer, config, k)
        monkeypatch.setattr(loop, "_step", dies)
    return arm
