"""The CLI's own parts, in-process: reading ``gateway predict --input`` files against a model's
metadata, the address default, ``--version`` and ``gateway profile build``. (Commands against a server: tests/e2e/test_cli.py.)"""
from __future__ import annotations

import json

import numpy as np
import pytest

from gateway import cli
from gateway._proto import gateway_pb2 as pb
from gateway._version import __version__
from gateway.cli import main
from gateway.config.profile import load_profile

META = pb.ModelMetadata(name="mixed", inputs=[
    pb.TensorSpec(name="features", dtype=pb.DATA_TYPE_FLOAT32, shape=[-1, 2]),
    pb.TensorSpec(name="ids", dtype=pb.DATA_TYPE_INT64, shape=[-1])])


def _json(tmp_path, content: str):
    path = tmp_path / "x.json"
    path.write_text(content)
    return path


def test_a_json_file_becomes_arrays_of_the_models_dtypes(tmp_path):
    inputs = cli._load_inputs(_json(tmp_path, json.dumps({"features": [[1, 2.5]], "ids": [7]})), META)
    assert inputs["features"].dtype == np.float32 and inputs["features"].tolist() == [[1.0, 2.5]]
    assert inputs["ids"].dtype == np.int64 and inputs["ids"].tolist() == [7]


@pytest.mark.parametrize("content, what", [
    ('{"features": [[1, 2]', "not valid JSON: Expecting ',' delimiter at line 1 column 21"),
    ("[[1, 2]]", "expected a JSON object mapping input names to arrays, got list"),
    ('{"features": [[1, 2]], "ids": [1], "extra": [1]}', "'extra' not an input of model 'mixed' (its inputs: features, ids)"),
    ('{"features": [[1, 2]]}', "missing input 'ids' of model 'mixed'"),
    ('{"features": [[1, 2], [3]], "ids": [1]}', "input 'features': not a rectangular array"),
    ('{"features": [["a", "b"]], "ids": [1]}', "input 'features': values must be numbers"),
    ('{"features": [[null, 1]], "ids": [1]}', "input 'features': values must be numbers"),
    ('{"features": [[1, 2]], "ids": [1.5]}', "input 'ids': holds float64 values but the model takes int64"),
])
def test_json_input_errors_name_the_file_and_what_is_wrong(tmp_path, content, what):
    path = _json(tmp_path, content)
    with pytest.raises(cli.InputFileError) as err:
        cli._load_inputs(path, META)
    assert str(err.value).startswith(f"{path}: ") and what in str(err.value), str(err.value)


def test_unreadable_and_non_text_files_are_named(tmp_path):
    with pytest.raises(cli.InputFileError, match=r"absent\.json: cannot read: No such file or directory"):
        cli._load_inputs(tmp_path / "absent.json", META)
    binary = tmp_path / "x.json"
    binary.write_bytes(b"\xff\xfe{}")
    with pytest.raises(cli.InputFileError, match=r"x\.json: not UTF-8 text \(byte 0\)"):
        cli._load_inputs(binary, META)


def test_npy_files(tmp_path):
    one = pb.ModelMetadata(name="one", inputs=[META.inputs[0]])
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    assert cli._load_inputs(tmp_path / "x.npy", one)["features"].dtype == np.float32
    with pytest.raises(cli.InputFileError, match=r"x\.npy: a \.npy file gives one array but the model takes"):
        cli._load_inputs(tmp_path / "x.npy", META)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(cli.InputFileError, match=r"bad\.npy: not a \.npy array numpy can load"):
        cli._load_inputs(tmp_path / "bad.npy", one)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(cli.InputFileError, match=r"obj\.npy: not a \.npy array numpy can load"):
        cli._load_inputs(tmp_path / "obj.npy", one)


def test_the_address_comes_from_the_flag_then_the_environment(monkeypatch):
    from gateway.config.settings import OTHER_VARIABLES

    assert cli.ADDRESS_ENV in OTHER_VARIABLES   # so gateway serve does not refuse it as a misspelt setting
    monkeypatch.delenv(cli.ADDRESS_ENV, raising=False)
    assert cli.build_parser().parse_args(["models"]).address == cli.DEFAULT_ADDRESS
    monkeypatch.setenv(cli.ADDRESS_ENV, "127.0.0.1:9")
    assert cli.build_parser().parse_args(["stats"]).address == "127.0.0.1:9"
    assert cli.build_parser().parse_args(["predict", "--model", "m", "--address", "h:1"]).address == "h:1"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"gateway {__version__}\n"


def test_feedback_files_csv_and_jsonl_become_labels(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("request_id,label,class_index,target\na,approve,,\nb,,2,\n\nc,,,1.5\n")
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text('{"request_id": "a", "label": "approve"}\n\n{"request_id": "b", "class_index": 2}\n'
                     '{"request_id": "c", "target": -1}\n')
    expected = [pb.Label(request_id="a", class_label="approve"), pb.Label(request_id="b", class_index=2),
                pb.Label(request_id="c", target=1.5)]
    assert cli._load_labels(csv) == expected
    expected[2].target = -1.0
    assert cli._load_labels(jsonl) == expected
    only = tmp_path / "t.csv"
    only.write_text("target,request_id\n0.5,x\n")
    assert cli._load_labels(only) == [pb.Label(request_id="x", target=0.5)]
    rows = tmp_path / "rows.csv"
    rows.write_text("request_id,row,class_index\na,3,1\na,,2\n")
    assert cli._load_labels(rows) == [pb.Label(request_id="a", class_index=1, row=3),
                                      pb.Label(request_id="a", class_index=2)]
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"request_id": "a", "row": 4, "target": 2}\n{"request_id": "a", "row": "1", "label": "x"}\n')
    assert cli._load_labels(rows) == [pb.Label(request_id="a", target=2.0, row=4),
                                      pb.Label(request_id="a", class_label="x", row=1)]


@pytest.mark.parametrize("name,content,what", [
    ("x.txt", "", "expected a .csv or .jsonl file"),
    ("x.csv", "id,label\na,b\n", "the first line must name the columns"),
    ("x.csv", "request_id,label,color\na,b,c\n", "line 1: columns must be request_id"),
    ("x.csv", "request_id,label\na,b,c\n", "line 2: 3 fields, the header names 2"),
    ("x.csv", "request_id,label,target\na,b,1\n", "line 2: needs exactly one of label, class_index, target, "
                                                  "got label, target"),
    ("x.csv", "request_id,class_index\na,1.5\n", "line 2: class_index '1.5' is not a whole number"),
    ("x.csv", "request_id,target\na,nan\n", "line 2: target must be a finite number"),
    ("x.csv", "request_id,target\n,1\n", "line 2: no request_id"),
    ("x.jsonl", '{"request_id": "a", "label": 1}\n', "line 1: label must be a class name"),
    ("x.jsonl", '\n{"request_id": "a", "class_index": -1}\n', "line 2: class_index must be a whole number of 0"),
    ("x.jsonl", '{"request_id": "a", "target": true}\n', "line 1: target must be a finite number"),
    ("x.jsonl", '{"request_id": "a", "colour": 1}\n', "line 1: unknown key 'colour'"),
    ("x.jsonl", '[1]\n', "line 1: expected a JSON object, got list"),
    ("x.jsonl", '{"request_id": \n', "line 1: not valid JSON"),
    ("x.jsonl", '{"request_id": 3, "target": 1}\n', "line 1: no request_id"),
    ("x.csv", "request_id,row,target\na,-1,1\n", "line 2: row must be a whole number from 0"),
    ("x.csv", "request_id,row,target\na,first,1\n", "line 2: row 'first' is not a whole number"),
    ("x.jsonl", '{"request_id": "a", "row": 1.5, "target": 1}\n', "line 1: row must be a whole number"),
    ("x.jsonl", '{"request_id": "a", "row": 4294967296, "target": 1}\n', "line 1: row must be a whole number"),
])
def test_feedback_file_errors_name_the_file_line_and_problem(tmp_path, capsys, name, content, what):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(cli.LabelFileError) as info:
        cli._load_labels(path)
    assert str(info.value).startswith(str(path)) and what in str(info.value)
    # the command says so and exits 2 before connecting to anything
    assert cli.main(["feedback", "--file", str(path), "--address", "127.0.0.1:1"]) == 2
    assert what in capsys.readouterr().err


def test_a_feedback_file_that_cannot_be_read_is_named(tmp_path):
    with pytest.raises(cli.LabelFileError, match="cannot read"):
        cli._load_labels(tmp_path / "missing.csv")
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(cli.LabelFileError, match="not UTF-8"):
        cli._load_labels(binary)


def test_profile_build_writes_a_profile_beside_the_version(repo, capsys):
    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    rows = "\n".join(",".join(f"{v:.6f}" for v in r) + f",{['approve', 'review', 'decline'][i % 3]}"
                     for i, r in enumerate(x))
    (repo / "ref.csv").write_text(",".join(f"f{i}" for i in range(16)) + ",outcome\n" + rows + "\n")
    assert main(["profile", "build", "--model", "classifier", "--data", str(repo / "ref.csv"),
                 "--label-column", "outcome", "--bins", "12", "--model-repository", str(repo)]) == 0
    out = capsys.readouterr().out
    assert f"{repo / 'classifier' / '1' / 'profile.npz'}: 300 rows of classifier@1, 12 bins per feature, " \
           "output classifier, accuracy " in out
    profile = load_profile(repo / "classifier" / "1" / "profile.npz")
    assert profile.rows == 300 and profile.labels_rows == 300 and profile.source_file == "ref.csv"
    assert profile.inputs["features"].edges.shape == (16, 13) and len(profile.source_sha256) == 64


@pytest.mark.parametrize("argv, what", [
    (["--model", "nope", "--data", "x.npy"], "no model 'nope' with a <version>/model.onnx under"),
    (["--model", "classifier", "--version", "9", "--data", "x.npy"], "has no version '9' (versions: 1)"),
    (["--model", "classifier", "--data", "absent.npy"], "cannot read"),
    (["--model", "regressor", "--data", "x.npy"], "16 values a row, the model takes 8"),
    (["--model", "classifier", "--data", "x.npy", "--bins", "0"], "bins must be in [1, 4096]"),
])
def test_profile_build_errors_are_one_line(repo, capsys, argv, what):
    np.save(repo / "x.npy", np.zeros((10, 16), np.float32))
    argv = [a if not a.endswith(".npy") else str(repo / a) for a in argv]
    assert main(["profile", "build", *argv, "--model-repository", str(repo)]) == 2
    err = capsys.readouterr().err
    assert what in err and err.count("\n") == 1 and not list(repo.glob("*/1/profile.npz"))
