"""Properties of the compiled kernels that their reference twins (tests/reference) do not
model: concurrent writers on the GIL, and the GIL released for large batches."""
import threading

import numpy as np

from gateway.kernels import ConfidenceStats, FeatureStats, RECORD_DTYPE, RequestRing


def test_ring_concurrent_producers_lose_nothing_uncounted():
    ring = RequestRing(4096)
    per_thread, n_threads = 50_000, 4
    drained = []
    done = threading.Event()

    def produce(tid):
        for i in range(per_thread):
            ring.write(tid, i, i, i, i, i, i, 1, 1, 0, False, 0, 0.5, 10, 0)

    def consume():
        while not done.is_set():
            drained.append(ring.drain())
        drained.append(ring.drain())

    c = threading.Thread(target=consume)
    c.start()
    ps = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    done.set()
    c.join()
    got = np.concatenate(drained)
    assert got.dtype == RECORD_DTYPE
    assert len(got) + ring.dropped == per_thread * n_threads
    assert ring.written == len(got)
    for t in range(n_threads):   # per producer, records keep their order
        seq = got["t_received_ns"][got["model_id"] == t]
        assert np.all(np.diff(seq) > 0)


def test_large_and_small_batches_agree_across_the_gil_threshold():
    # Batches of >= 16,384 values run with the GIL released, smaller ones keep it (ext/gil.pxd):
    # the same rows folded either way must give the same state.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4096, 8)).astype(np.float32)          # 32,768 values: released
    whole, parts = FeatureStats(8, value_range=(-3, 3)), FeatureStats(8, value_range=(-3, 3))
    whole.observe(x)
    for s in range(0, len(x), 7):                                # 56 values each: kept
        parts.observe(x[s:s + 7])
    a, b = whole.state(), parts.state()
    assert a["count"].tolist() == b["count"].tolist() == [4096] * 8
    assert a["histogram"].tolist() == b["histogram"].tolist()
    np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a["variance"], b["variance"], rtol=1e-9)
    z = rng.normal(size=(2048, 10))                              # 20,480 scores: released
    c_whole, c_parts = ConfidenceStats(10), ConfidenceStats(10)
    t_whole, p_whole = c_whole.observe(z, logits=True)
    chunks = [c_parts.observe(z[s:s + 5], logits=True) for s in range(0, len(z), 5)]
    assert np.array_equal(t_whole, np.concatenate([t for t, _ in chunks]))
    assert np.array_equal(p_whole, np.concatenate([p for _, p in chunks]))
    for key, value in c_whole.state().items():  # sums differ only in the order they were added
        np.testing.assert_allclose(value, c_parts.state()[key], rtol=1e-12, err_msg=key)
