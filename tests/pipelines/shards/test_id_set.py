"""Id sets: fingerprints tell ids apart and do not depend on how the ids are laid out in Arrow; membership
is exact along runs of equal high halves."""
import numpy as np
import pyarrow as pa

from pipelines.shards.id_set import FINGERPRINT, IdSet, fingerprints


def test_fingerprints_tell_ids_apart_and_agree_across_batches():
    ids = [f"v{i:09d}" for i in range(50_000)] + ["", "a", "é", "a" * 300, "x/y.mp4", "x/y.mp3"]
    prints = fingerprints(pa.array(ids))
    assert len(np.unique(prints)) == len(ids)
    again = fingerprints(pa.chunked_array([ids[:7], ids[7:]]).combine_chunks().slice(5))   # offsets into a buffer
    assert (again == prints[5:]).all()


def test_a_set_holds_what_it_was_given():
    ids = IdSet([pa.array(["a", "b"]), pa.chunked_array([["c"], ["d"]])])
    assert len(ids) == 4 and ids.holds(fingerprints(pa.array(["b", "z", "d", ""]))).tolist() == [True, False, True,
                                                                                                 False]
    assert not IdSet([]).holds(fingerprints(pa.array(["a"]))).any()


def test_a_run_of_equal_high_halves_is_searched_through():
    known = np.zeros(4, FINGERPRINT)
    known["a"], known["b"] = [5, 5, 5, 7], [1, 2, 3, 1]
    queries = np.zeros(4, FINGERPRINT)
    queries["a"], queries["b"] = [5, 5, 7, 5], [3, 9, 1, 1]
    ids = IdSet([])
    ids.high, ids.low = known["a"], known["b"]
    assert ids.holds(queries).tolist() == [True, False, True, True]
