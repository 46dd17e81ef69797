"""Delayed labels end to end: answers over gRPC, then Feedback (late, out of order, duplicated,
unknown, invalid), and the online quality GetStats reports equals scikit-learn's."""
from __future__ import annotations

import math
import time

import grpc
import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
)

from gateway import cli
from gateway._proto import gateway_pb2 as pb

LABELS = ["approve", "review", "decline"]  # the demo classifier's


def _stream(gw, requests):
    return {r.request_id: r.response for r in gw.stub.PredictStream(iter(requests), timeout=60)}


def test_quality_from_delayed_labels_equals_sklearn(make_gateway, demo_models, capsys):
    # 340 classifier + 60 regressor answers in a store of 360: the first 40 leave before their labels
    gw = make_gateway(model_repository=demo_models, feedback_store_entries=360, feedback_window=1000)
    rng = np.random.default_rng(3)
    clf_ids = [f"c{i}" for i in range(340)]
    reg_ids = [f"r{i}" for i in range(60)]
    clf = _stream(gw, [pb.PredictRequest(model="classifier", request_id=rid, inputs=[pb.Tensor(
        name="features", dtype=pb.DATA_TYPE_FLOAT32, shape=[1, 16],
        data=rng.standard_normal((1, 16)).astype(np.float32).tobytes())]) for rid in clf_ids])
    reg = _stream(gw, [pb.PredictRequest(model="regressor", request_id=rid, inputs=[pb.Tensor(
        name="features", dtype=pb.DATA_TYPE_FLOAT32, shape=[1, 8],
        data=rng.standard_normal((1, 8)).astype(np.float32).tobytes())]) for rid in reg_ids])
    predicted = {rid: LABELS.index(clf[rid].predicted_label[0]) for rid in clf_ids}
    value = {rid: float(np.frombuffer(reg[rid].outputs[0].data, np.float32)[0]) for rid in reg_ids}

    truth = {rid: int(rng.integers(0, 3)) for rid in clf_ids}
    target = {rid: value[rid] + float(rng.normal(scale=0.3)) for rid in reg_ids}
    labels = [pb.Label(request_id=rid, class_label=LABELS[truth[rid]]) if i % 2 else
              pb.Label(request_id=rid, class_index=truth[rid]) for i, rid in enumerate(clf_ids)]
    labels += [pb.Label(request_id=rid, target=target[rid]) for rid in reg_ids]
    labels = [labels[i] for i in rng.permutation(len(labels))]  # out of order
    first, rest = labels[:150], labels[150:]
    bad = [pb.Label(request_id="c100", class_label="nope"), pb.Label(request_id="c101", class_index=7),
           pb.Label(request_id="r5", class_index=1), pb.Label(request_id="r6", target=math.nan),
           pb.Label(request_id="c102"), pb.Label(class_index=0)]
    unknown = [pb.Label(request_id=f"never-{j}", class_index=0) for j in range(7)]

    reply = gw.stub.Feedback(pb.FeedbackRequest(labels=bad + first + unknown), timeout=10)
    late_in_first = sum(1 for lab in first if lab.request_id in clf_ids[:40])
    assert (reply.invalid, reply.unknown, reply.late, reply.duplicate) == (6, 7, late_in_first, 0)
    assert reply.accepted == 150 - late_in_first
    duplicates = first[:50]
    reply = gw.stub.Feedback(pb.FeedbackRequest(labels=rest + duplicates), timeout=10)
    assert reply.duplicate == 50 and reply.late == 40 - late_in_first and reply.unknown == 0
    assert reply.accepted == len(rest) - (40 - late_in_first)

    stats = gw.stub.GetStats(pb.GetStatsRequest(), timeout=10)
    assert stats.feedback_unknown == 7
    by_version = {(m.model, m.version): m for m in stats.models}
    q = by_version[("classifier", "1")].quality
    joined = clf_ids[40:]
    y_true = [truth[rid] for rid in joined]
    y_pred = [predicted[rid] for rid in joined]
    # (c102's label has no truth: invalid before any lookup, so no version's)
    assert (q.kind, q.predictions, q.joined, q.late, q.invalid) == ("classifier", 340, 300, 40, 2)
    assert q.duplicate == sum(1 for lab in duplicates if lab.request_id.startswith("c"))
    assert q.join_rate == pytest.approx(300 / 340) and q.window == 300
    assert q.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2], zero_division=0)
    assert [c.label for c in q.classes] == LABELS
    assert [c.precision for c in q.classes] == pytest.approx(list(p))
    assert [c.recall for c in q.classes] == pytest.approx(list(r))
    assert [c.f1 for c in q.classes] == pytest.approx(list(f))
    assert [c.support for c in q.classes] == list(s)
    mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    assert (q.macro_precision, q.macro_recall, q.macro_f1) == pytest.approx((mp, mr, mf))
    assert list(q.confusion) == confusion_matrix(y_true, y_pred, labels=[0, 1, 2]).ravel().tolist()

    rq = by_version[("regressor", "1")].quality
    assert (rq.kind, rq.predictions, rq.joined, rq.invalid) == ("regressor", 60, 60, 2)
    t = [target[rid] for rid in reg_ids]
    v = [value[rid] for rid in reg_ids]
    assert rq.mae == pytest.approx(mean_absolute_error(t, v))
    assert rq.rmse == pytest.approx(math.sqrt(mean_squared_error(t, v)))
    assert math.isnan(rq.accuracy) and math.isnan(q.mae)
    assert not by_version[("wide_mlp", "1")].HasField("quality")  # nothing of it was kept

    text = gw.server.export.prometheus_text()  # (the same instruments go out over OTLP)
    clf_attrs = 'gateway_model_name="classifier",gateway_model_version="1"'
    reg_attrs = 'gateway_model_name="regressor",gateway_model_version="1"'
    for line in (f"gateway_quality_accuracy_ratio{{{clf_attrs}}} {q.accuracy!r}",
                 f"gateway_quality_macro_f1_ratio{{{clf_attrs}}} {q.macro_f1!r}",
                 f"gateway_quality_mae{{{reg_attrs}}} {rq.mae!r}", f"gateway_quality_rmse{{{reg_attrs}}} {rq.rmse!r}",
                 f'gateway_feedback_labels_total{{{clf_attrs},gateway_feedback_outcome="late"}} 40',
                 f"gateway_feedback_predictions_total{{{clf_attrs}}} 340", "gateway_feedback_unknown_total 7"):
        assert line in text.splitlines(), line
    assert f"gateway_quality_mae{{{clf_attrs}}}" not in text  # (NaN: not a regressor)
    assert cli.main(["stats", "--address", gw.address]) == 0
    out = capsys.readouterr().out
    assert f"joined 300 of 340 kept (88.2 %), late 40" in out and f"accuracy {q.accuracy:.3f}" in out
    assert f"MAE {rq.mae:.4f} RMSE {rq.rmse:.4f}" in out
    assert "(unknown): 7" in out


def test_a_label_after_the_ttl_is_late(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models, feedback_store_entries=100, feedback_ttl_s=0.3)
    x = np.zeros((1, 8), np.float32)
    gw.predict("regressor", {"features": x}, request_id="early")
    time.sleep(0.4)
    gw.predict("regressor", {"features": x}, request_id="fresh")
    reply = gw.stub.Feedback(pb.FeedbackRequest(labels=[pb.Label(request_id="early", target=1.0),
                                                        pb.Label(request_id="fresh", target=1.0)]), timeout=10)
    assert (reply.accepted, reply.late) == (1, 1)


def test_bad_feedback_calls_get_invalid_argument_and_feedback_off_failed_precondition(make_gateway, demo_models):
    gw = make_gateway(model_repository=demo_models, feedback_store_entries=10)
    too_many = pb.FeedbackRequest(labels=[pb.Label(request_id="x", class_index=0)] * 10_001)
    with pytest.raises(grpc.RpcError) as info:
        gw.stub.Feedback(too_many, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "request has more than 10000 labels"
    # empty labels: 2 bytes each on the wire, refused before they are parsed
    empty = b"\x0a\x00" * 40_000
    raw = gw.channel.unary_unary("/gateway.v1.Gateway/Feedback", request_serializer=None,
                                 response_deserializer=None)
    with pytest.raises(grpc.RpcError) as info:
        raw(empty, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "10000 labels" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\x0a\x05\x0a", timeout=10)  # a label running past the end
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("request is not a valid gateway.v1.FeedbackRequest (3 bytes)")
    assert gw.stub.Feedback(pb.FeedbackRequest(), timeout=10).accepted == 0

    off = make_gateway(model_repository=demo_models)
    with pytest.raises(grpc.RpcError) as info:
        off.stub.Feedback(pb.FeedbackRequest(labels=[pb.Label(request_id="x", class_index=0)]), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "feedback_store_entries=0" in info.value.details()


def test_gateway_feedback_sends_a_file_in_calls_of_at_most_10000(make_gateway, demo_models, tmp_path, capsys):
    gw = make_gateway(model_repository=demo_models, feedback_store_entries=100)
    x = np.zeros((1, 8), np.float32)
    for rid in ("a", "b"):
        gw.predict("regressor", {"features": x}, request_id=rid)
    path = tmp_path / "labels.jsonl"
    lines = ['{"request_id": "a", "target": 0.5}', '{"request_id": "b", "label": "approve"}']
    lines += [f'{{"request_id": "u{i}", "target": 1}}' for i in range(10_500)]  # two calls
    lines += ['{"request_id": "a", "target": 0.5}']
    path.write_text("\n".join(lines) + "\n")
    assert cli.main(["feedback", "--file", str(path), "--address", gw.address]) == 0
    assert capsys.readouterr().out.strip() == \
        "10503 labels: accepted 1, unknown 10500, late 0, duplicate 1, invalid 1"
    assert cli.main(["feedback", "--file", str(path), "--address", "127.0.0.1:1"]) == 1
    assert "cannot reach a gateway at 127.0.0.1:1" in capsys.readouterr().err


def test_five_row_answers_are_labelled_row_by_row(make_gateway, demo_models, tmp_path, capsys):
    """Answers of 5 rows, their labels per row (``Label.row``) through Feedback and through
    ``gateway feedback`` with a row column: late, out of order, duplicated, a row past the
    answer (invalid), an unknown id; the quality equals scikit-learn's on the joined rows."""
    gw = make_gateway(model_repository=demo_models, feedback_store_entries=50, feedback_window=1000)
    rng = np.random.default_rng(8)
    ids = [f"m{i}" for i in range(60)]  # a store of 50 answers: the first 10 leave before their labels
    predicted = {}
    for rid in ids:
        reply = gw.predict("classifier", {"features": rng.standard_normal((5, 16)).astype(np.float32)},
                           request_id=rid)
        assert len(reply.predicted_label) == 5
        for r, name in enumerate(reply.predicted_label):
            predicted[rid, r] = LABELS.index(name)
    truth = {key: int(rng.integers(0, 3)) for key in predicted}
    keys = [list(predicted)[i] for i in rng.permutation(len(predicted))]  # out of order
    first, rest = keys[:120], keys[120:]
    late = {key for key in predicted if key[0] in ids[:10]}

    reply = gw.stub.Feedback(pb.FeedbackRequest(labels=[
        pb.Label(request_id=rid, row=r, class_label=LABELS[truth[rid, r]]) for rid, r in first] + [
        pb.Label(request_id="m30", row=5, class_index=0),        # past the answer's 5 rows: invalid
        pb.Label(request_id="m31", row=1_000_000, class_index=0),
        pb.Label(request_id="never", row=2, class_index=0)]), timeout=10)
    late_first = sum(1 for key in first if key in late)
    assert (reply.accepted, reply.late, reply.duplicate, reply.invalid, reply.unknown) == \
        (120 - late_first, late_first, 0, 2, 1)

    path = tmp_path / "labels.csv"
    lines = ["request_id,row,class_index"] + [f"{rid},{r},{truth[rid, r]}" for rid, r in rest]
    lines += [f"{rid},{r},{truth[rid, r]}" for rid, r in first[:30]]  # sent again: duplicates
    lines += ["m40,,0"]  # no row: row 0, joined already
    path.write_text("\n".join(lines) + "\n")
    assert cli.main(["feedback", "--file", str(path), "--address", gw.address]) == 0
    late_rest = len(late) - late_first
    assert capsys.readouterr().out.strip() == \
        (f"{len(rest) + 31} labels: accepted {len(rest) - late_rest}, unknown 0, late {late_rest}, "
         f"duplicate 31, invalid 0")

    (m,) = gw.stub.GetStats(pb.GetStatsRequest(model="classifier"), timeout=10).models
    q = m.quality
    joined = [key for key in predicted if key not in late]
    y_true = [truth[key] for key in joined]
    y_pred = [predicted[key] for key in joined]
    assert (q.predictions, q.joined, q.late, q.duplicate, q.invalid) == (300, 250, 50, 31, 2)
    assert q.join_rate == pytest.approx(250 / 300) and q.window == 250
    assert q.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2], zero_division=0)
    assert [c.precision for c in q.classes] == pytest.approx(list(p))
    assert [c.recall for c in q.classes] == pytest.approx(list(r))
    assert [c.f1 for c in q.classes] == pytest.approx(list(f))
    assert [c.support for c in q.classes] == list(s)
    mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    assert (q.macro_precision, q.macro_recall, q.macro_f1) == pytest.approx((mp, mr, mf))
    assert list(q.confusion) == confusion_matrix(y_true, y_pred, labels=[0, 1, 2]).ravel().tolist()
