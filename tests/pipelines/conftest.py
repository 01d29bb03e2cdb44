"""Models and an index for the embedding, search and serving tests: a TempMe-Tiny backbone checkpoint (so every
process builds the same frozen backbone), an adapter trained here to match the synthetic captions, an untrained
one, and the synthetic shards embedded with the trained one."""
import logging

import pytest
import torch
import torch.nn.functional as F

import tempme
from tests.fixtures.model_fixtures import random_clip

TRAIN_STEPS = 60


@pytest.fixture(scope="session")
def backbone_checkpoint(tmp_path_factory):
    """Random TempMe-Tiny weights with token embeddings spread wide, so different captions start apart."""
    clip = random_clip(seed=0)
    with torch.no_grad():
        clip.token_embedding.weight.normal_(0, 1.0)
    path = tmp_path_factory.mktemp("backbone") / "tempme-tiny.pt"
    torch.save(clip.state_dict(), path)
    return path


def shard_videos(shards):
    from pipelines.shards import normalise
    from pipelines.stream import split_videos

    items = [it for split in ("train", "test") for it in split_videos(str(shards), split)]
    masks = torch.stack([it["mask"] for it in items])
    return items, normalise(torch.stack([it["video"] for it in items]), masks), masks


@pytest.fixture(scope="session")
def trained_adapter(synthetic_shards, backbone_checkpoint, tmp_path_factory):
    """A real model trained here (plain torch, text-side LoRA, video embeddings fixed) to find each
    synthetic video from its captions. Returns the adapter directory."""
    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = tempme.load_model("tempme-tiny-12f", pretrained=str(backbone_checkpoint))
    items, video, mask = shard_videos(synthetic_shards)
    with torch.no_grad():
        targets = model.encode_video(video, mask)
    texts = [c for it in items for c in it["captions"]]
    labels = torch.tensor([i for i, it in enumerate(items) for _ in it["captions"]])
    params = [p for name, p in model.trainable_parameters().items() if name.startswith("text.")]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(TRAIN_STEPS):
        loss = F.cross_entropy(model.similarity(model.encode_text(texts), targets), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().save_adapter(tmp_path_factory.mktemp("trained") / "tempme-synthetic")


@pytest.fixture(scope="session")
def untrained_adapter(backbone_checkpoint, tmp_path_factory):
    """Same backbone, fresh LoRA: another model version."""
    torch.manual_seed(1)
    model = tempme.load_model("tempme-tiny-12f", pretrained=str(backbone_checkpoint))
    return model.save_adapter(tmp_path_factory.mktemp("untrained") / "tempme-synthetic")


@pytest.fixture(scope="session")
def trained_index(ray_cluster, synthetic_shards, trained_adapter, tmp_path_factory):
    """The synthetic shards embedded once with the trained model (2 actors): (index dir, report, MLflow URI).
    Tests that change an index work on a copy."""
    from pipelines.embed import embed_corpus

    work = tmp_path_factory.mktemp("trained_index")
    uri = f"sqlite:///{work}/mlflow.db"
    report = embed_corpus(str(synthetic_shards), str(trained_adapter), str(work / "index"), workers=2,
                          batch_size=4, tracking_uri=uri)
    return work / "index", report, uri
