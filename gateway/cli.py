"""``gateway serve | predict | models | stats | profile build | demo-repository``."""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import pathlib
import sys
import time

import numpy as np

from ._version import __version__
from .api.stats import MAX_WINDOW_S

DEFAULT_ADDRESS = "127.0.0.1:8001"
#: Where the client commands find the gateway when ``--address`` is not given (gateway serve
#: does not read it: its address is ``host`` and ``port``).
ADDRESS_ENV = "GATEWAY_ADDRESS"


def _cmd_serve(args: argparse.Namespace) -> int:
    from . import logs
    from .config.settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config, flags=True, model_repository=args.model_repository,
                                 host=args.host, port=args.port, admin_port=args.admin_port, workers=args.workers)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        from .adapters.grpc_v1.server import ListenError
        from .app import serve
        if settings.workers > 1:
            from .workers.supervisor import serve
    except ImportError as exc:
        if exc.name != "gateway._native":  # (KernelsMissing: a source tree without built kernels)
            raise
        print(f"gateway: {exc}", file=sys.stderr)
        return 2

    try:
        return asyncio.run(serve(settings))
    except (FileNotFoundError, ListenError) as exc:  # before anything started: one line, no traceback
        print(f"gateway: {exc}", file=sys.stderr)
        return 2


def _rpc_failure(command: str, address: str, exc) -> int:
    """One line on stderr for a failed call; says so when what answers is not this gateway."""
    import grpc

    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.UNIMPLEMENTED:
        # (some servers send no details with it: the bare "UNIMPLEMENTED:" said nothing)
        what = (f"the server at {address} does not implement gateway.v1.Gateway: it is not this "
                f"gateway (UNIMPLEMENTED{': ' + details if details else ''})")
    elif code == grpc.StatusCode.UNAVAILABLE and "HTTP/2" in details:
        what = f"the server at {address} does not speak gRPC (is it the admin HTTP port?): {details}"
    elif code == grpc.StatusCode.UNAVAILABLE and details.startswith(("failed to connect", "errors resolving")):
        what = (f"cannot reach a gateway at {address} (pass --address or set {ADDRESS_ENV}): {details}")
    else:
        what = f"{code.name}: {details}"
    print(f"gateway {command}: {what}", file=sys.stderr)
    return 1


def _random_input(spec, rng: np.random.Generator) -> np.ndarray:
    from .adapters.grpc_v1.dtypes import WIRE_TO_NUMPY

    dtype = WIRE_TO_NUMPY[spec.dtype]
    shape = tuple(1 if d < 0 else d for d in spec.shape)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.integers(0, 10, shape).astype(dtype)


class InputFileError(ValueError):
    """An ``--input`` file that cannot be used; the message names the file and what is wrong."""


def _as_input(path: pathlib.Path, name: str, value, dtype: np.dtype) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nesting
        raise InputFileError(f"{path}: input {name!r}: not a rectangular array ({exc})") from None
    if array.dtype == object or array.dtype.kind in "USV":
        raise InputFileError(f"{path}: input {name!r}: values must be numbers (or booleans) in nested "
                             f"lists of equal lengths, got {array.dtype.kind == 'U' and 'strings' or 'other values'}")
    # same_kind: no silent float -> int or int -> bool truncation; an empty array fits any dtype
    if array.size and not np.can_cast(array.dtype, dtype, casting="same_kind"):
        raise InputFileError(f"{path}: input {name!r}: holds {array.dtype} values but the model takes {dtype}")
    return array.astype(dtype, copy=False)


def _load_inputs(path: pathlib.Path, metadata) -> dict[str, np.ndarray]:
    from .adapters.grpc_v1.dtypes import WIRE_TO_NUMPY

    specs = {s.name: s for s in metadata.inputs}
    dtypes = {name: np.dtype(WIRE_TO_NUMPY[s.dtype]) for name, s in specs.items()}
    if path.suffix == ".npy":
        if len(specs) != 1:
            raise InputFileError(f"{path}: a .npy file gives one array but the model takes "
                                 f"{sorted(specs)}; use .json")
        (name, dtype), = dtypes.items()
        try:
            array = np.load(path, allow_pickle=False)
        except OSError as exc:
            raise InputFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise InputFileError(f"{path}: not a .npy array numpy can load ({exc})") from None
        return {name: _as_input(path, name, array, dtype)}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: not UTF-8 text (byte {exc.start}); .json or .npy expected") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: expected a JSON object mapping input names to arrays, "
                             f"got {type(data).__name__}")
    unknown = sorted(set(data) - set(specs))
    if unknown:
        raise InputFileError(f"{path}: {', '.join(map(repr, unknown))} not an input of model "
                             f"{metadata.name!r} (its inputs: {', '.join(sorted(specs))})")
    missing = sorted(set(specs) - set(data))
    if missing:
        raise InputFileError(f"{path}: missing input {', '.join(map(repr, missing))} of model {metadata.name!r}")
    return {name: _as_input(path, name, value, dtypes[name]) for name, value in data.items()}


def _cmd_predict(args: argparse.Namespace) -> int:
    import grpc

    from .client import GatewayClient

    with GatewayClient(args.address) as client:
        try:
            meta = client.metadata(args.model, args.version)
            if args.input:
                inputs = _load_inputs(pathlib.Path(args.input), meta)
            else:
                rng = np.random.default_rng(args.seed)
                inputs = {s.name: _random_input(s, rng) for s in meta.inputs}
            response, outputs = client.predict(args.model, inputs, version=args.version, timeout_s=args.timeout_s)
        except grpc.RpcError as exc:
            return _rpc_failure("predict", args.address, exc)
        except (ValueError, OSError) as exc:
            print(f"gateway predict: {exc}", file=sys.stderr)
            return 2
    summary = {
        "request_id": response.request_id,
        "served_by": response.served_by,
        "degraded": response.degraded,
        "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype), "values": v.tolist()}
                    for k, v in outputs.items()},
    }
    if response.degraded:
        summary["fallback_reason"] = response.fallback_reason
    if response.confidence:
        summary["confidence"] = [round(c, 6) for c in response.confidence]
        summary["predicted_label"] = list(response.predicted_label)
    print(json.dumps(summary, indent=2))
    return 0


LABEL_FIELDS = ("label", "class_index", "target")


class LabelFileError(ValueError):
    """A ``--file`` of labels that cannot be used; the message names the file, line and problem."""


def _quoted(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} chars)"


def _row(where: str, value) -> int:
    """A label's optional ``row`` (of its answer; absent or empty: 0)."""
    if value is None or value == "":
        return 0
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise LabelFileError(f"{where}: row {_quoted(value)} is not a whole number") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 32:
        raise LabelFileError(f"{where}: row must be a whole number from 0 (the answer's first row) to "
                             f"{2 ** 32 - 1}, got {_quoted(json.dumps(value))}")
    return value


def _label(path: pathlib.Path, line: int, request_id, values: dict, row=None):
    """One ``pb.Label`` from a row: a request id, exactly one of LABEL_FIELDS and optionally
    the row of the answer it is for."""
    label = _truth(path, line, request_id, values)
    label.row = _row(f"{path} line {line}", row)
    return label


def _truth(path: pathlib.Path, line: int, request_id, values: dict):
    from ._proto import gateway_pb2 as pb

    where = f"{path} line {line}"
    if not isinstance(request_id, str) or not request_id:
        raise LabelFileError(f"{where}: no request_id (a non-empty string)")
    given = {k: v for k, v in values.items() if v not in (None, "")}
    if len(given) != 1:
        raise LabelFileError(f"{where}: needs exactly one of {', '.join(LABEL_FIELDS)}, got "
                             f"{', '.join(given) or 'none'}")
    (field, value), = given.items()
    if field == "label":
        if not isinstance(value, str):
            raise LabelFileError(f"{where}: label must be a class name (a string; class_index takes numbers), "
                                 f"got {_quoted(json.dumps(value))}")
        return pb.Label(request_id=request_id, class_label=value)
    if field == "class_index":
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise LabelFileError(f"{where}: class_index {_quoted(value)} is not a whole number") from None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 63:
            raise LabelFileError(f"{where}: class_index must be a whole number of 0 or more, "
                                 f"got {_quoted(json.dumps(value))}")
        return pb.Label(request_id=request_id, class_index=value)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise LabelFileError(f"{where}: target {_quoted(value)} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LabelFileError(f"{where}: target must be a finite number, got {_quoted(json.dumps(value))}")
    return pb.Label(request_id=request_id, target=float(value))


def _load_labels(path: pathlib.Path) -> list:
    """Labels from a .csv (a header naming request_id and any of label, class_index, target,
    optionally row; each line filling one of the three, and row where the label is for a row
    of its answer other than the first) or a .jsonl / .ndjson file (one object a line with the
    same keys). The whole file is checked before anything is sent."""
    import csv

    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise LabelFileError(f"{path}: expected a .csv or .jsonl file of request_id and label, class_index "
                             f"or target")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LabelFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise LabelFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    labels = []
    if suffix == ".csv":
        reader = csv.reader(text.splitlines())
        header = [h.strip() for h in next(reader, [])]
        if "request_id" not in header or not set(LABEL_FIELDS) & set(header):
            raise LabelFileError(f"{path}: the first line must name the columns: request_id and one or more of "
                                 f"{', '.join(LABEL_FIELDS)}; got {_quoted(','.join(header))}")
        unknown = [h for h in header if h not in ("request_id", "row", *LABEL_FIELDS)]
        if unknown or len(set(header)) != len(header):
            raise LabelFileError(f"{path}: line 1: columns must be request_id, {', '.join(LABEL_FIELDS)}, row "
                                 f"(each once); got {_quoted(','.join(header))}")
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise LabelFileError(f"{path} line {line}: {len(row)} fields, the header names {len(header)}")
            values = dict(zip(header, (v.strip() for v in row)))
            labels.append(_label(path, line, values.pop("request_id"), values, values.pop("row", None)))
        return labels
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise LabelFileError(f"{path} line {line}: not valid JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(obj, dict):
            raise LabelFileError(f"{path} line {line}: expected a JSON object, got {type(obj).__name__}")
        unknown = sorted(set(obj) - {"request_id", "row", *LABEL_FIELDS})
        if unknown:
            raise LabelFileError(f"{path} line {line}: unknown key {_quoted(unknown[0])} (keys: request_id, "
                                 f"{', '.join(LABEL_FIELDS)}, row)")
        labels.append(_label(path, line, obj.get("request_id"), {k: obj.get(k) for k in LABEL_FIELDS},
                             obj.get("row")))
    return labels


def _shares(text: str) -> dict[str, float]:
    """``1=90,2=10`` -> {"1": 90.0, "2": 10.0} (``--weights`` / ``--shares``)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        version, sep, value = part.partition("=")
        try:
            if not sep or not version:
                raise ValueError
            out[version.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected version=number[,version=number...], got {part!r}") from None
    return out


def _admin_token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            return pathlib.Path(args.token_file).read_text(encoding="utf-8").splitlines()[0].strip() or None
        except (OSError, IndexError, UnicodeDecodeError) as exc:
            print(f"gateway traffic: cannot read the token from {args.token_file}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    return os.environ.get("GATEWAY_ADMIN_TOKEN") or None


def _cmd_traffic(args: argparse.Namespace) -> int:
    import grpc

    from ._proto import gateway_pb2 as pb
    from .client import GatewayClient

    token = None if args.op == "show" else _admin_token(args)
    if args.op != "show" and token is None:
        print("gateway traffic: an admin call needs the admin token: set GATEWAY_ADMIN_TOKEN or pass --token-file",
              file=sys.stderr)
        return 2
    with GatewayClient(args.address) as client:
        meta = client.token_metadata(token) if token else None
        a, reason = client.admin, args.reason
        try:
            if args.op == "show":
                state = a.GetTraffic(pb.TrafficRequest(model=args.model), timeout=args.timeout_s)
            elif args.op == "set":
                state = a.SetTraffic(pb.SetTrafficRequest(model=args.model, weights=args.weights, reason=reason),
                                     timeout=args.timeout_s, metadata=meta)
            elif args.op == "promote":
                state = a.Promote(pb.PromoteRequest(model=args.model, version=args.version, reason=reason),
                                  timeout=args.timeout_s, metadata=meta)
            elif args.op == "rollback":
                state = a.RollBack(pb.TrafficRequest(model=args.model, reason=reason), timeout=args.timeout_s,
                                   metadata=meta)
            elif args.op == "shadow":
                state = a.SetShadow(pb.SetShadowRequest(model=args.model, shares=args.shares, reason=reason),
                                    timeout=args.timeout_s, metadata=meta)
            else:
                refs = a.ReloadProfiles(pb.TrafficRequest(model=args.model, reason=reason), timeout=args.timeout_s,
                                        metadata=meta)
                for name, ref in sorted(refs.references.items()):
                    print(f"{name}  reference={ref or '-'}")
                return 0
        except grpc.RpcError as exc:
            return _rpc_failure(f"traffic {args.op}", args.address, exc)

    def shown(shares) -> str:
        return ", ".join(f"{v}: {w:g}" for v, w in sorted(shares.items())) or "-"
    print(f"{state.model}: weights {shown(state.weights)}; in force {shown(state.shares) if state.shares else 'all to ' + state.latest_version}; "
          f"shadow {shown(state.shadow)}; rolled back {', '.join(state.rolled_back) or '-'}; "
          f"roll back to {shown(state.previous) if state.has_previous else '-'}")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from .client import GatewayClient
    from .replay import replay

    paths = [pathlib.Path(f) for f in args.files]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"gateway replay: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    with GatewayClient(args.address) as client:
        try:
            report = replay(client, paths, version=args.version, atol=args.atol, rtol=args.rtol,
                            limit=args.limit, timeout_s=args.timeout_s)
        except (ValueError, KeyError) as exc:
            print(f"gateway replay: not a capture file: {exc}", file=sys.stderr)
            return 2
    for d in report.differences:
        print(f"differs: {d['request_id']} (captured from version {d['captured_version']}, replayed by "
              f"{d['replayed_by']}{', masked inputs' if d['masked'] else ''}): {d['what']}")
    skipped = ", ".join(f"{n} {why}" for why, n in report.skipped.items()) or "none"
    errors = ", ".join(f"{n} {code}" for code, n in report.errors.items()) or "none"
    print(f"# replayed {report.replayed}: {report.same} the same, {report.differ} different "
          f"({report.masked} with masked inputs); errors: {errors}; skipped: {skipped}")
    print(json.dumps(report.as_dict()))
    return 1 if report.differ or report.errors else 0


def _cmd_feedback(args: argparse.Namespace) -> int:
    import grpc

    from .client import GatewayClient

    try:
        labels = _load_labels(pathlib.Path(args.file))
    except LabelFileError as exc:
        print(f"gateway feedback: {exc}", file=sys.stderr)
        return 2
    with GatewayClient(args.address) as client:
        try:
            reply = client.feedback_all(labels, timeout_s=args.timeout_s)
        except grpc.RpcError as exc:
            return _rpc_failure("feedback", args.address, exc)
    print(f"{len(labels)} labels: accepted {reply.accepted}, unknown {reply.unknown}, late {reply.late}, "
          f"duplicate {reply.duplicate}, invalid {reply.invalid}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    import grpc

    from .client import GatewayClient

    with GatewayClient(args.address) as client:
        try:
            if args.history:
                history = client.history(args.model, args.limit)
            else:
                models = client.models()
        except grpc.RpcError as exc:
            return _rpc_failure("models", args.address, exc)
    if args.history:
        print("# time (UTC)           model@version        event           source      detail")
        for e in history.events:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.t_unix_s))
            who = e.model + ("@" + e.version if e.version else "")
            print(f"{when}  {who:<20} {e.kind:<15} {e.source:<11} {e.detail}")
        return 0
    print("# model  versions  latest  state  provider")
    for m in models:
        line = f"{m.name}  versions={','.join(m.versions) or '-'}  latest={m.latest_version or '-'}  " \
               f"state={m.state}  provider={m.execution_provider or '-'}"
        if m.error:
            line += f"  error={m.error}"
        print(line)
    return 0



def _num(value: float, width: int, decimals: int) -> str:
    """A right-aligned number, or "-" where there is none yet (no requests in the window)."""
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}.{decimals}f}"


def _window_s(text: str) -> float:
    """``--window-s``: refused here, as a flag, rather than by the server after connecting."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= MAX_WINDOW_S:  # (also NaN)
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_WINDOW_S} seconds, got {text}")
    return value


def _cmd_stats(args: argparse.Namespace) -> int:
    import grpc

    from .client import GatewayClient

    with GatewayClient(args.address) as client:
        try:
            stats = client.stats(args.model, args.window_s)
        except grpc.RpcError as exc:
            return _rpc_failure("stats", args.address, exc)
    # (the server counts whole seconds: a fraction rounds up)
    workers = (f"; {stats.workers} workers, restarts {stats.worker_restarts}"
               if stats.workers > 1 or stats.worker_restarts else "")
    print(f"# window {math.ceil(args.window_s)} s; ring drops {stats.ring_drops}{workers}")
    print(f"# {'model@version':<22}{'req/s':>9}{'rows/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
          f"{'max ms':>9}{'err %':>7}{'degr %':>7}{'batch':>7}{'conf':>6}")
    for m in stats.models:
        lat = m.latency
        print(f"{m.model + '@' + m.version:<24}{m.requests_per_s:>9.1f}{m.rows_per_s:>10.1f}"
              f"{_num(lat.p50_ms, 9, 3)}{_num(lat.p90_ms, 9, 3)}{_num(lat.p99_ms, 9, 3)}"
              f"{_num(lat.max_ms, 9, 3)}{100 * m.error_share:>7.2f}{100 * m.degraded_share:>7.2f}"
              f"{_num(m.mean_batch_size, 7, 1)}{_num(m.mean_confidence, 6, 2)}")
        for f in m.top_shifts:
            print(f"    input {f.input}[{f.feature}]: mean {f.mean:.4g} std {f.std:.4g} "
                  f"shift {f.shift_score:+.2f} sd, NaN {f.nan_count}")
        if m.HasField("drift"):
            print(_drift_line(m.drift))
            for f in m.drift.features:
                if f.grade in ("warn", "alert"):
                    print(f"      {f.grade:<5} input {f.input}[{f.feature}]: PSI {f.psi:.3f} JS {f.js:.3f} "
                          f"KS {f.ks:.3f} (+{f.ks_error:.3f})")
            for f in m.drift.data_quality:
                print(f"      input {f.input}[{f.feature}]: NaN {100 * f.nan_rate:.2f} %, Inf "
                      f"{100 * f.inf_rate:.2f} %, outside the reference's range {100 * f.out_of_range_rate:.2f} %")
            if m.drift.change_alarms:
                c = m.drift.changes[0]
                where = f"input {c.input}[{c.feature}]" if c.input else "confidence"
                print(f"    changes: {m.drift.change_alarms} alarms; newest {where} {c.side} at row {c.row}, "
                      f"{c.age_s:.0f} s ago")
        if m.HasField("quality"):
            print(_quality_line(m.quality))
    if stats.feedback_unknown:
        print(f"# feedback labels naming no answer kept (unknown): {stats.feedback_unknown}")
    for s in stats.shadow:
        errors = sum(s.errors.values())
        print(f"# shadow {s.primary} -> {s.shadow}: mirrored {s.mirrored}, shed {s.shed}, errors {errors}, "
              f"agreement {'-' if math.isnan(s.agreement) else f'{100 * s.agreement:.1f} %'}, mean |diff| "
              f"{'-' if math.isnan(s.mean_abs_diff) else f'{s.mean_abs_diff:.4g}'}, p50 {_num(s.p50_ms, 0, 2).strip()} ms, "
              f"p99 {_num(s.p99_ms, 0, 2).strip()} ms")
    if stats.rejected:
        print("# refused since start: " + ", ".join(
            f"{(r.model + ('@' + r.version if r.version else '')) or '(no known model)'} {r.reason} {r.requests}"
            for r in sorted(stats.rejected, key=lambda r: -r.requests)[:12]))
    return 0


def _drift_line(d) -> str:
    """One version's drift against its reference, in one line."""
    head = f"    drift vs {d.reference} reference ({d.reference_rows} rows)"
    if not d.window_rows:
        return f"{head}: no window graded yet"
    line = (f"{head}, last {d.window_rows} rows / {d.window_s:.0f} s: features alert {d.features_alert}, "
            f"warn {d.features_warn}, ok {d.features_ok}")
    for name, m in (("predicted class", d.predicted_class), ("confidence", d.confidence),
                    ("predictions", d.prediction)):
        if m.window_rows:
            line += f"; {name} {m.grade} (PSI {m.psi:.3f})"
    if d.outlier_scored_rows:
        line += f"; outliers {100 * d.outlier_rate:.2f} % of {d.outlier_scored_rows} rows scored"
    return line


def _quality_line(q) -> str:
    """One version's online quality from delayed labels, in one line."""
    rate = "-" if math.isnan(q.join_rate) else f"{100 * q.join_rate:.1f} %"
    counts = (f"    labels: joined {q.joined} of {q.predictions} kept ({rate}), late {q.late}, "
              f"duplicate {q.duplicate}, invalid {q.invalid}; last {q.window}:")
    if q.kind == "regressor":
        return f"{counts} MAE {_num(q.mae, 0, 4)} RMSE {_num(q.rmse, 0, 4)}"
    return (f"{counts} accuracy {_num(q.accuracy, 0, 3)} macro precision {_num(q.macro_precision, 0, 3)} "
            f"recall {_num(q.macro_recall, 0, 3)} F1 {_num(q.macro_f1, 0, 3)}")


def _cmd_profile_build(args: argparse.Namespace) -> int:
    from .config.model import load_model_config
    from .config.profile import PROFILE_FILE
    from .config.settings import SettingsError
    from .core.registry import version_key
    from .demo import demo_repository
    from .monitoring.profile import ProfileDataError, build_profile, read_data, read_labels, sha256_of
    from .repository.scanner import scan
    from .runtime.session import ModelLoadError, OnnxModel

    root = pathlib.Path(args.model_repository) if args.model_repository else demo_repository()
    try:
        entry = scan(root).get(args.model)
    except OSError as exc:
        print(f"gateway: cannot read model repository {root}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if entry is None or not entry.versions:
        print(f"gateway: no model {args.model!r} with a <version>/model.onnx under {root}", file=sys.stderr)
        return 2
    version = args.version or max(entry.versions, key=version_key)
    if version not in entry.versions:
        print(f"gateway: model {args.model} has no version {args.version!r} "
              f"(versions: {', '.join(sorted(entry.versions, key=version_key))})", file=sys.stderr)
        return 2
    data_path = pathlib.Path(args.data)
    try:
        config = load_model_config(entry.config_path)
        model = OnnxModel(entry.model_path(version), entry.name, version, config, ["cpu"])
        data, labels = read_data(data_path, [s.name for s in model.inputs], label_column=args.label_column)
        if args.labels:
            labels = read_labels(pathlib.Path(args.labels))
        profile = build_profile(model, data, labels=labels, class_names=config.labels,
                                logits=bool(config.classifier and config.classifier.logits), bins=args.bins,
                                source_file=data_path.name, source_sha256=sha256_of(data_path))
    except (SettingsError, ModelLoadError, ProfileDataError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    target = entry.path / version / PROFILE_FILE
    profile.save(target)
    quality = ""
    if profile.accuracy is not None:
        quality = f", accuracy {profile.accuracy:.4f} on {profile.labels_rows} labels"
    elif profile.mae is not None:
        quality = f", MAE {profile.mae:.4g} RMSE {profile.rmse:.4g} on {profile.labels_rows} targets"
    print(f"{target}: {profile.rows} rows of {entry.name}@{version}, {profile.bins} bins per feature, "
          f"output {profile.output.kind}{quality}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import write_demo_repository

    root = write_demo_repository(pathlib.Path(args.directory))
    print(root)
    return 0


def _cmd_alerts(args: argparse.Namespace) -> int:
    import grpc

    from .client import GatewayClient

    with GatewayClient(args.address) as client:
        try:
            listing = client.alerts(args.model)
        except grpc.RpcError as exc:
            return _rpc_failure("alerts", args.address, exc)
    print(f"# {len(listing.alerts)} firing, {listing.pending} pending; {listing.rules} rules"
          + (f"; {listing.untracked} states not tracked (alerts.max_active)" if listing.untracked else ""))
    for a in listing.alerts:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(a.firing_since_unix_s))
        labels = "".join(f"  {k}={v}" for k, v in sorted(a.labels.items()))
        print(f"{a.severity:<8} {a.rule}  {a.model}@{a.version}  {a.metric} {a.value:.4g} {a.comparator} "
              f"{a.threshold:g}  since {since}{labels}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="gRPC inference gateway for ONNX models")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    address = os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
    address_help = f"host:port of the gateway (default: ${ADDRESS_ENV}, else {DEFAULT_ADDRESS})"

    serve = sub.add_parser("serve", help="serve a model repository over gRPC")
    serve.add_argument("--model-repository", help="directory of <model>/<version>/model.onnx "
                       "(default: the bundled demo models)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="gRPC port (default 8001; 0 picks a free one)")
    serve.add_argument("--admin-port", type=int,
                       help="admin HTTP port for /metrics, /healthz, /readyz (default 8002; 0: off)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the port (SO_REUSEPORT), each "
                       "with its own models and runtime; one /metrics and GetStats for all (default 1)")
    serve.add_argument("--config", help="YAML settings file (see README)")
    serve.set_defaults(func=_cmd_serve)

    predict = sub.add_parser("predict", help="send one request and print the outputs")
    predict.add_argument("--model", required=True)
    predict.add_argument("--version", default="")
    predict.add_argument("--address", default=address, help=address_help)
    predict.add_argument("--input", help=".npy (single-input models) or .json {input: array}; "
                         "default: random values of the right shape")
    predict.add_argument("--seed", type=int, default=0)
    predict.add_argument("--timeout-s", type=float, default=30.0)
    predict.set_defaults(func=_cmd_predict)

    models = sub.add_parser("models", help="list the models a gateway serves (--history: what happened to them)")
    models.add_argument("--address", default=address, help=address_help)
    models.add_argument("--history", action="store_true",
                        help="the version history instead: loads, failed loads, unloads, traffic weights, "
                             "policy edits, promotions, rollbacks, newest first")
    models.add_argument("--model", default="", help="with --history: only this model's")
    models.add_argument("--limit", type=int, default=50, help="with --history: the newest this many (default 50)")
    models.set_defaults(func=_cmd_models)

    stats = sub.add_parser("stats", help="live latency, throughput, errors and input shifts per model")
    stats.add_argument("--address", default=address, help=address_help)
    stats.add_argument("--model", default="", help="only this model (an unknown one is an error)")
    stats.add_argument("--window-s", type=_window_s, default=10.0,
                       help=f"seconds the figures cover, up to {MAX_WINDOW_S} (default 10)")
    stats.set_defaults(func=_cmd_stats)

    alerts = sub.add_parser("alerts", help="the alerts firing now (rules in the server's alerts settings)")
    alerts.add_argument("--address", default=address, help=address_help)
    alerts.add_argument("--model", default="", help="only this model's")
    alerts.set_defaults(func=_cmd_alerts)

    profile = sub.add_parser("profile", help="reference profiles of model versions (drift is measured against them)")
    profile_sub = profile.add_subparsers(dest="profile_command", required=True)
    build = profile_sub.add_parser(
        "build", help="run a model version over reference data and store its profile beside the version")
    build.add_argument("--model", required=True)
    build.add_argument("--version", default="", help="default: the latest")
    build.add_argument("--data", required=True, help=".npy (single-input models), .npz (an array per input "
                       "name, optionally 'labels') or .csv (the single input's columns)")
    build.add_argument("--labels", help="labels or targets, one per row (.npy, or text with one per line)")
    build.add_argument("--label-column", help="the .csv column (header name or number) holding labels")
    build.add_argument("--bins", type=int, default=10, help="histogram bins per feature (default 10)")
    build.add_argument("--model-repository", help="default: the bundled demo models")
    build.set_defaults(func=_cmd_profile_build)

    feedback = sub.add_parser("feedback", help="send delayed labels (request_id [and row] -> label, class index "
                              "or target)")
    feedback.add_argument("--file", required=True, help=".csv with a header (request_id and label, class_index "
                          "or target; optionally row, the answer's row, 0 by default) or .jsonl, one "
                          "{\"request_id\": ..., \"label\": ..., \"row\": ...} object a line")
    feedback.add_argument("--address", default=address, help=address_help)
    feedback.add_argument("--timeout-s", type=float, default=30.0, help="per call of up to 10000 labels")
    feedback.set_defaults(func=_cmd_feedback)

    tr = sub.add_parser("traffic", help="a model's traffic: show it, or (admin token) set weights, promote, "
                        "roll back, shadow, reload profiles")
    tr.add_argument("op", choices=["show", "set", "promote", "rollback", "shadow", "reload-profiles"])
    tr.add_argument("--model", default="", help="the model (reload-profiles: empty for every model)")
    tr.add_argument("--weights", type=_shares, default={}, help="set: e.g. 1=90,2=10 (empty: the latest takes all)")
    tr.add_argument("--version", default="", help="promote: the version that takes all the traffic")
    tr.add_argument("--shares", type=_shares, default={}, help="shadow: e.g. 3=0.25 (empty: shadowing stops)")
    tr.add_argument("--reason", default="", help="why (audit log and version history)")
    tr.add_argument("--token-file", help="file whose first line is the admin token (default: $GATEWAY_ADMIN_TOKEN)")
    tr.add_argument("--address", default=address, help=address_help)
    tr.add_argument("--timeout-s", type=float, default=30.0)
    tr.set_defaults(func=_cmd_traffic)

    rp = sub.add_parser("replay", help="re-send captured requests (capture files) and report the answers "
                        "that differ; exit status 1 when any differ or fail")
    rp.add_argument("files", nargs="+", help="capture-*.jsonl files, or directories holding them")
    rp.add_argument("--address", default=address, help=address_help)
    rp.add_argument("--version", default="", help="replay against this version (default: the one that answered)")
    rp.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default 0: the bytes must match)")
    rp.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0)")
    rp.add_argument("--limit", type=int, default=100_000, help="replay at most this many requests")
    rp.add_argument("--timeout-s", type=float, default=10.0, help="per request")
    rp.set_defaults(func=_cmd_replay)

    demo = sub.add_parser("demo-repository", help="write the demo model repository to a directory")
    demo.add_argument("directory")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
