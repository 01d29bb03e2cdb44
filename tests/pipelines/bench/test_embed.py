"""The embedding benchmark at its smallest: the plain loop and every job run embed the same videos with the
same model, so their rates compare like with like."""
import pytest
import torch

import tempme
from pipelines.bench.embed import index_embeddings, make_random_adapter, run_benchmark, shard_reads
from tests.fixtures.index_fixtures import shard_videos


@pytest.mark.slow
def test_plain_loop_and_job_runs_embed_the_same_videos_alike(ray_cluster, synthetic_shards, tmp_path):
    adapter = make_random_adapter("tempme-tiny-12f", tmp_path / "model")
    threads = torch.get_num_threads()
    result = run_benchmark(synthetic_shards, adapter, tmp_path / "runs", batch_size=4, worker_counts=(1, 2))

    assert torch.get_num_threads() == threads          # the plain loop's one thread does not leak out
    items, video, mask = shard_videos(synthetic_shards)
    with torch.inference_mode():
        expected = dict(zip((it["id"] for it in items), tempme.load_model(adapter=adapter).encode_video(video, mask)
                            .numpy()))
    assert [(m.runner, m.workers) for m in [result.plain, *result.jobs]] == [
        ("plain loop", 1), ("embed job", 1), ("embed job", 2)]
    for m in [result.plain, *result.jobs]:
        assert m.videos == len(expected) == 16
        assert 0 < m.end_to_end <= m.stage and m.seconds > 0
    for job in result.jobs:
        found = index_embeddings(job.index)
        assert found.keys() == expected.keys()
        # the job's inference form (bf16 where native) against fp32
        assert min(float(found[k] @ v) for k, v in expected.items()) >= 0.999
    assert result.max_difference < 1e-5        # the plain loop and the job: the same inference form, alike
    assert result.overhead(result.jobs[0], "end_to_end") == pytest.approx(
        100 * (result.plain.end_to_end / result.jobs[0].end_to_end - 1))


@pytest.mark.slow
def test_more_workers_than_the_cluster_has_cpus_is_refused(ray_cluster, synthetic_shards, tmp_path):
    with pytest.raises(ValueError, match="8 workers need as many CPUs; the Ray cluster has 4"):
        run_benchmark(synthetic_shards, tmp_path / "no-adapter", tmp_path / "runs", worker_counts=(1, 8))


def test_a_batch_of_neighbouring_samples_is_read_in_fewer_requests(synthetic_shards):
    """The synthetic shards hold 4 videos each: a batch of 8 neighbours is 2 reads, not 8."""
    reads = shard_reads(str(synthetic_shards), batch_size=8)
    assert reads["per_sample_requests"] == 8
    assert reads["coalesced_requests"] == 2
