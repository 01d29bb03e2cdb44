"""Small indexes built by hand, as the embedding job would write them, for the index tests."""
import numpy as np

from pipelines.index import IndexStore, ModelRef, write_fragment

V1 = ModelRef("tiny", "1", "models:/tiny/1")
V2 = ModelRef("tiny", "2", "models:/tiny/2")
V3 = ModelRef("tiny", "3", "models:/tiny/3")


def unit_vectors(n, dim=16, seed=0):
    e = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


IDS = [f"video{i:03d}" for i in range(40)]
EMB = unit_vectors(40)


def batch(ids, emb, errors=None):
    n = len(ids)
    return {"video_id": np.asarray(ids, object), "embedding": emb,
            "error": np.asarray(errors or [""] * n, object), "caption": np.asarray([f"about {i}" for i in ids], object),
            "thumb_shard": np.asarray(["s3://b/train-000000.tar"] * n, object),
            "thumb_offset": np.arange(n) * 100, "thumb_size": np.full(n, 50)}


def commit(writer, ids, emb, rows=8):
    """What the job does: writer tasks write fragments of `rows` rows, the writer commits each."""
    for start in range(0, len(ids), rows):
        out = write_fragment(batch(ids[start:start + rows], emb[start:start + rows]), writer.uri, writer.model.__dict__)
        writer.commit([f for f in out["fragments"] if f])


def build(location, model=V1, ids=IDS, emb=EMB, run="run"):
    with IndexStore(location).writer(model, run) as w:
        commit(w, ids, emb)
        w.publish()
    return IndexStore(location)
