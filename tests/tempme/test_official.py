"""Importing a checkpoint in the authors' key layout reproduces what their model computes."""
import pytest
import torch
import torch.nn.functional as F

import tempme
from jobs.cli import main as tempme_cli
from tempme.official import import_official
from tempme.reference import ReferenceVideoEncoder
from tests.fixtures.model_fixtures import random_clip

WIDTH, TEXT_WIDTH, RANK = 64, 64, 8


def authors_checkpoint(seed=0):
    """Random trained entries named and shaped as the authors' code saves them, beside frozen CLIP entries."""
    g = torch.Generator().manual_seed(seed)
    state = {"clip.logit_scale": torch.tensor(4.6)}
    for i in range(12):
        for prefix, width in (("clip.visual.transformer", WIDTH), ("clip.transformer", TEXT_WIDTH)):
            state[f"{prefix}.resblocks.{i}.attn.TVPt_LoRA_a"] = torch.randn(RANK, width, generator=g) * 0.2
            state[f"{prefix}.resblocks.{i}.attn.TVPt_LoRA_b"] = torch.randn(3 * width, RANK, generator=g) * 0.2
    for layer, slots in ((8, 12), (9, 6), (10, 3)):
        state[f"clip.visual.transformer.resblocks.{layer}.TVPt_Video_Positional_embedding"] = \
            torch.randn(1, slots, 1, WIDTH, generator=g) * 0.5
    return state


@pytest.fixture
def imported(tmp_path, tiny_clip_checkpoint):
    official = authors_checkpoint()
    path = tmp_path / "authors.pth"
    torch.save({"state_dict": official}, path)
    out = tmp_path / "adapter"
    assert tempme_cli(["import-official", str(path), "--preset", "tempme-tiny-12f",
                       "--pretrained", str(tiny_clip_checkpoint), "--out", str(out)]) == 0
    return official, tempme.load_model(adapter=out)


def test_imported_video_embeddings_equal_the_authors_computation(imported, random_video):
    official, model = imported
    visual_entries = {k[len("clip.visual."):]: v for k, v in official.items() if k.startswith("clip.visual.")}
    reference = ReferenceVideoEncoder(random_clip().visual, model.config.schedule, 12, visual_entries)
    video = random_video(2, seed=5)
    mask = torch.tensor([[True] * 12, [True] * 8 + [False] * 4])
    with torch.no_grad():
        ours = model.encode_video(video, mask)
        expected = reference(video, mask)
        frozen = ReferenceVideoEncoder(random_clip().visual, model.config.schedule, 12)(video, mask)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    assert (ours - frozen).abs().max() > 1e-2  # the import changed the embeddings


def test_imported_text_embeddings_follow_the_lora_maths(imported):
    """x @ A.T @ B.T added to q,k,v is the same as adding B @ A to the packed in-projection weight."""
    official, model = imported
    clip = random_clip()
    with torch.no_grad():
        for i, block in enumerate(clip.transformer.resblocks):
            a = official[f"clip.transformer.resblocks.{i}.attn.TVPt_LoRA_a"]
            b = official[f"clip.transformer.resblocks.{i}.attn.TVPt_LoRA_b"]
            block.attn.in_proj_weight += b @ a
        import open_clip
        texts = ["a green triangle moving up", "two people talk"]
        expected = F.normalize(clip.encode_text(open_clip.get_tokenizer("TempMe-Tiny")(texts)), dim=-1)
        torch.testing.assert_close(model.encode_text(texts), expected, rtol=1e-4, atol=1e-5)


def test_wrong_layout_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "plain_clip.pth"
    torch.save(random_clip().state_dict(), path)
    with pytest.raises(tempme.CheckpointError, match="plain_clip.pth: no TempMe entries"):
        import_official(path, tempme.get_config("tempme-tiny-12f"), tmp_path / "o")
    assert tempme_cli(["import-official", str(path), "--preset", "tempme-tiny-12f", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "plain_clip.pth: no TempMe entries" in err and "Traceback" not in err
    partial = {k: v for k, v in authors_checkpoint().items() if "resblocks.9." not in k}
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    assert tempme_cli(["import-official", str(path), "--preset", "tempme-tiny-12f", "--out", str(tmp_path / "o")]) == 2
    assert "partial.pth: does not fit preset 'tempme-tiny-12f'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
