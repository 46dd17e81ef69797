import threading

import numpy as np
import pytest

from gateway.kernels import (
    ConfidenceStats, FeatureStats, RECORD_DTYPE, RequestRing, WindowedCounters)


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


def test_ring_full_drops_and_wraps():
    ring = RequestRing(3)
    assert ring.capacity == 4
    for i in range(6):
        ring.write(i, i, 0, 0, 0, 0, 0, 0, 0, 0, True, 0, float("nan"), 0, 0)
    assert ring.dropped == 2
    assert ring.drain(2)["model_id"].tolist() == [0, 1]
    for i in range(6, 8):
        ring.write(i, i, 0, 0, 0, 0, 0, 0, 0, 0, False, 0, 0.0, 0, 0)
    out = np.empty(10, dtype=RECORD_DTYPE)
    assert ring.drain(out=out)["model_id"].tolist() == [2, 3, 6, 7]
    assert len(ring.drain()) == 0


def _ref_moments(x):
    m = np.ma.masked_invalid(np.asarray(x, dtype=np.float64))
    return m.count(0), m.mean(0).filled(0), m.var(0, ddof=1).filled(np.nan)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32, np.int64])
def test_featurestats_against_numpy(dtype):
    rng = np.random.default_rng(1)
    x = (rng.normal(5, 3, (777, 6)) * 1000).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        x[3, 1] = np.nan
        x[9, 2] = np.inf
        x[10, 3] = 1e-310 if dtype == np.float64 else 0
    fs = FeatureStats(6, value_range=(-5000, 15000), n_bins=8)
    for s in range(0, len(x), 50):
        fs.observe(x[s:s + 50])
    fs.observe(x[:0])
    st = fs.state()
    cnt, mean, var = _ref_moments(x)
    xf = x.astype(np.float64)
    assert st["count"].tolist() == cnt.tolist()
    np.testing.assert_allclose(st["mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(st["variance"], var, rtol=1e-9)
    assert st["nan_count"].tolist() == np.isnan(xf).sum(0).tolist()
    assert st["inf_count"].tolist() == np.isinf(xf).sum(0).tolist()
    for f in range(6):
        col = xf[:, f][np.isfinite(xf[:, f])]
        ref, _ = np.histogram(col, np.linspace(-5000, 15000, 9))
        assert st["histogram"][f, 1:-1].tolist() == ref.tolist()
        assert st["histogram"][f, 0] == (col < -5000).sum()
        assert st["histogram"][f, -1] == (col > 15000).sum()


def test_featurestats_merge_and_warmup_and_sampling():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 3)) * 1e8 + 1e9
    a, b = FeatureStats(3, warmup_rows=100), FeatureStats(3, warmup_rows=100)
    a.observe(x[:50])
    b.observe(x[50:])
    a.merge(b)
    st = a.state()
    np.testing.assert_allclose(st["mean"], x.mean(0), rtol=1e-9)
    np.testing.assert_allclose(st["variance"], x.var(0, ddof=1), rtol=1e-9)
    assert st["histogram"].sum() == x.size
    s = FeatureStats(3, value_range=(0, 1), sample_every=3)
    for _ in range(7):
        s.observe(x[:10])
    assert s.batches_observed == 3 and s.state()["count"][0] == 30
    hi = FeatureStats(2, value_range=(0, 1))
    hi.observe(np.zeros((4, 1, 2), dtype=np.float32))   # higher rank flattened
    assert hi.state()["count"].tolist() == [4, 4]


@pytest.mark.parametrize("logits", [True, False])
def test_confidence_against_numpy(logits):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 5)) * 4
    z[0] = [1e30, 0, 0, 0, -1e30] if logits else [1, 0, 0, 0, 0]
    if not logits:
        z = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    z[5, 2] = np.nan
    c = ConfidenceStats(5)
    top1, pred = c.observe(z.astype(np.float32), logits=logits)
    p = z
    if logits:
        e = np.exp(z - z.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
    ok = ~np.isnan(z).any(1)
    np.testing.assert_allclose(top1[ok], p.max(1)[ok], rtol=1e-5)
    assert pred[ok].tolist() == p.argmax(1)[ok].tolist()
    assert pred[5] == -1 and np.isnan(top1[5])
    st = c.state()
    assert st["invalid_rows"] == 1 and st["rows"] == ok.sum()
    assert st["class_counts"].tolist() == np.bincount(p.argmax(1)[ok], minlength=5).tolist()
    assert st["top1_hist"].sum() == st["entropy_hist"].sum() == ok.sum()


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


def test_windowed_counters():
    c = WindowedCounters(60)
    t = np.arange(0, 100_000_000_000, 100_000_000, dtype=np.int64)   # 10/s for 100 s
    c.add_arrays(t, np.full_like(t, 2), (t % 3 == 0).astype(np.int64), np.zeros_like(t))
    now = int(t[-1])
    assert c.totals()[0] == len(t)
    rates = c.rates(10, now)
    assert rates[0] == pytest.approx(10.0) and rates[1] == pytest.approx(20.0)
    assert c.rates(1000, now)[0] == pytest.approx(10.0)   # clipped to the ring length
