"""The repository manager in-process: loads the repository into a registry through the real
assembler and keeps it in step with the disk (new, changed, broken and removed versions;
policy-only edits in place; rejected configs keep what is loaded; each failure logged once per
change; the hook after every pass)."""
from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gateway.api import GatewayError, Status
from gateway.config.profile import OutputProfile, ReferenceProfile
from gateway.monitoring.profile import feature_profile
from gateway.core.assembly import Assembler, AssemblyOptions
from gateway.core.context import Attempt
from gateway.core.registry import ModelRegistry
from gateway.policy.breaker import BreakerState
from gateway.repository.manager import RepositoryManager
from gateway.telemetry import Telemetry
from tests.conftest import save_model
from tests.core.serving import LABELS, echo, request, rows

BREAKER = ("policy:\n  circuit_breaker: {enabled: true, sliding_window_size: 1, minimum_number_of_calls: 1,"
           " wait_duration_in_open_state_ms: 60000}\n")


def _write(path: pathlib.Path, text: str) -> None:
    """Write and make sure the scanner sees a change (coarse file-system clocks)."""
    before = path.stat() if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if before is not None and (path.stat().st_mtime_ns, path.stat().st_size) == (before.st_mtime_ns, before.st_size):
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))


def _model(root: pathlib.Path, name: str, version: str = "1", graph=None) -> None:
    save_model(root / name / version / "model.onnx", graph or echo())


def manage(tmp_path, body, *, allow_fault_injection=False, on_reloaded=None, observers=None):
    root = tmp_path / "models"
    root.mkdir()

    async def main():
        executor = ThreadPoolExecutor(2)
        registry = ModelRegistry()
        assembler = Assembler(executor, AssemblyOptions(allow_fault_injection=allow_fault_injection),
                              observers=observers)
        manager = RepositoryManager(root, registry, assembler, default_providers=["cpu"],
                                    allow_fault_injection=allow_fault_injection, on_reloaded=on_reloaded)
        try:
            return await body(root, manager, registry)
        finally:
            await manager.close()
            executor.shutdown(wait=True)
    return asyncio.run(main())


async def _infer(registry, model="echo", version=""):
    mv = registry.resolve(model, version)
    return await mv.batcher.submit(request(model, rows([0.1, 0.7, 0.2])), Attempt(mv.served_by, rows=1))


def test_every_version_is_loaded_and_broken_ones_are_reported(tmp_path):
    async def body(root, manager, registry):
        _model(root, "echo", "1")
        _model(root, "echo", "2")
        (root / "broken" / "1").mkdir(parents=True)
        (root / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
        (root / "empty").mkdir()
        await manager.reload()
        echo_entry = registry.get("echo")
        assert sorted(echo_entry.versions) == ["1", "2"] and echo_entry.latest == "2" and not echo_entry.errors
        assert np.allclose((await _infer(registry)).outputs["probabilities"], [[0.1, 0.7, 0.2]])
        broken = registry.get("broken")
        assert broken.state == "UNAVAILABLE" and "model.onnx" in broken.errors["1"]
        assert registry.get("empty").errors == {"repository": f"no <version>/model.onnx under {root / 'empty'}"}
    manage(tmp_path, body)


def test_an_unchanged_repository_keeps_every_version_and_a_new_version_joins_them(tmp_path):
    async def body(root, manager, registry):
        _model(root, "echo", "1")
        await manager.reload()
        first = registry.resolve("echo", "1")
        await manager.reload()
        assert registry.resolve("echo", "1") is first                 # nothing reloaded
        _model(root, "echo", "2")
        await manager.reload()
        assert registry.resolve("echo", "1") is first and registry.resolve("echo").version == "2"
    manage(tmp_path, body)


def test_a_changed_model_file_replaces_its_version_and_the_old_one_closes(tmp_path):
    async def body(root, manager, registry):
        _model(root, "echo", "1")
        await manager.reload()
        old = registry.resolve("echo", "1")
        _model(root, "echo", "1", echo(width="n"))                    # another graph, another size
        await manager.reload()
        new = registry.resolve("echo", "1")
        assert new is not old and new.model.inputs[0].shape == (-1, -1)
        await asyncio.sleep(0.05)                                     # the retired batcher finishes
        with pytest.raises(GatewayError) as info:
            old.batcher.submit(request(), Attempt("echo@1", rows=1))
        assert info.value.status is Status.UNAVAILABLE and "being unloaded" in info.value.message
    manage(tmp_path, body)


def test_a_policy_only_edit_is_applied_in_place(tmp_path, caplog):
    async def body(root, manager, registry):
        _model(root, "echo")
        _write(root / "echo" / "config.yaml", LABELS + BREAKER)
        await manager.reload()
        mv = registry.resolve("echo")
        assert mv.policy.breaker.try_acquire()
        mv.policy.breaker.on_error(0.001)
        _write(root / "echo" / "config.yaml", LABELS + BREAKER + "  output_guard: {enabled: true}\n")
        with caplog.at_level(logging.INFO, logger="gateway.repository"):
            await manager.reload()
        assert registry.resolve("echo") is mv                          # no session reload
        assert mv.policy.guard is not None and mv.policy.breaker.state is BreakerState.OPEN
        assert "model echo: policy updated in place (versions ['1'])" in caplog.text
    manage(tmp_path, body)


def test_a_policy_edit_that_does_not_fit_is_rejected_and_a_fix_clears_it(tmp_path):
    async def body(root, manager, registry):
        _model(root, "echo")
        _write(root / "echo" / "config.yaml", LABELS)
        await manager.reload()
        mv = registry.resolve("echo")
        _write(root / "echo" / "config.yaml",
               LABELS + "policy: {fallback: {chain: [{static: {probabilities: [0.5, 0.5]}}]}}\n")
        await manager.reload()
        entry = registry.get("echo")
        assert "policy.fallback.chain.0.static" in entry.errors["config"] and entry.versions["1"] is mv
        assert mv.policy.chain == []                                   # the old policy stands
        _write(root / "echo" / "config.yaml",
               LABELS + "policy: {fallback: {chain: [{static: {probabilities: [0.5, 0.25, 0.25]}}]}}\n")
        await manager.reload()
        assert registry.get("echo").errors == {} and [k for k, _ in mv.policy.chain] == ["static"]
    manage(tmp_path, body)


def test_a_rejected_config_keeps_the_loaded_versions_serving(tmp_path):
    async def body(root, manager, registry):
        _model(root, "echo")
        await manager.reload()
        mv = registry.resolve("echo")
        _write(root / "echo" / "config.yaml", "batching: {max_batch_sise: 8}\n")
        await manager.reload()
        entry = registry.get("echo")
        assert "batching.max_batch_sise" in entry.errors["config"] and entry.versions["1"] is mv
        assert (await _infer(registry)).outputs["probabilities"].shape == (1, 3)
        _write(root / "echo" / "config.yaml", "batching: {max_batch_size: 8}\n")   # fixed: reloaded
        await manager.reload()
        assert registry.get("echo").errors == {} and registry.resolve("echo").model.max_batch_size == 8
    manage(tmp_path, body)


def test_a_config_edit_beyond_the_policy_reloads_the_sessions(tmp_path):
    async def body(root, manager, registry):
        _model(root, "echo")
        await manager.reload()
        old = registry.resolve("echo")
        _write(root / "echo" / "config.yaml", "labels: [x, y, z]\n")
        await manager.reload()
        new = registry.resolve("echo")
        assert new is not old and new.labels == ("x", "y", "z") and old.labels == ()
    manage(tmp_path, body)


def test_a_faults_edit_updates_the_injector_in_place(tmp_path):
    async def body(root, manager, registry):
        _model(root, "echo")
        _write(root / "echo" / "config.yaml", "faults: {error_rate: 0.0}\n")
        await manager.reload()
        mv = registry.resolve("echo")
        _write(root / "echo" / "config.yaml", "faults: {error_rate: 1.0}\n")
        await manager.reload()
        assert registry.resolve("echo") is mv and mv.model.faults.config.error_rate == 1.0
        with pytest.raises(GatewayError, match="injected fault"):
            await _infer(registry)
    manage(tmp_path, body, allow_fault_injection=True)


def test_a_removed_model_is_unloaded_and_an_unreadable_root_changes_nothing(tmp_path, caplog):
    async def body(root, manager, registry):
        _model(root, "echo")
        _model(root, "other")
        await manager.reload()
        gone = registry.resolve("other")
        shutil.rmtree(root / "other")
        await manager.reload()
        assert [e.name for e in registry.entries()] == ["echo"]
        await asyncio.sleep(0.05)
        with pytest.raises(GatewayError, match="being unloaded"):
            gone.batcher.submit(request("other"), Attempt("other@1", rows=1))
        shutil.rmtree(root)
        with caplog.at_level(logging.ERROR, logger="gateway.repository"):
            await manager.reload()
        assert "cannot read model repository" in caplog.text and [e.name for e in registry.entries()] == ["echo"]
    manage(tmp_path, body)


def test_log_lines_list_versions_in_the_order_list_models_does(tmp_path, caplog):
    """Numeric versions sort numerically (10 after 9), as ListModels and routing sort them."""
    async def body(root, manager, registry):
        for version in ("10", "9", "2"):
            _model(root, "echo", version)
        _write(root / "echo" / "config.yaml", LABELS)
        with caplog.at_level(logging.INFO, logger="gateway.repository"):
            await manager.reload()
            _write(root / "echo" / "config.yaml", LABELS + BREAKER)
            await manager.reload()
        assert "model echo ready: versions ['2', '9', '10'], latest 10" in caplog.text
        assert "model echo: policy updated in place (versions ['2', '9', '10'])" in caplog.text
    manage(tmp_path, body)


def _failures(caplog) -> list[str]:
    return [r.getMessage().split(":")[0] for r in caplog.records
            if getattr(r, "event", "") in ("model.load_failed", "model.config_rejected")]


def test_a_version_that_fails_to_load_is_logged_once_per_change_of_its_file(tmp_path, caplog):
    async def body(root, manager, registry):
        _model(root, "echo", "1")
        broken = root / "echo" / "2" / "model.onnx"
        broken.parent.mkdir()
        broken.write_bytes(b"not an onnx file")
        with caplog.at_level(logging.INFO, logger="gateway.repository"):
            for _ in range(3):                                        # three polls, one report
                await manager.reload()
            assert _failures(caplog) == ["model echo version 2 failed to load"]
            assert "model.onnx" in registry.get("echo").errors["2"] and registry.resolve("echo").version == "1"
            assert sum("model echo ready" in r.getMessage() for r in caplog.records) == 1
            _write(broken, "still not an onnx file")                  # changed, still broken: once more
            await manager.reload()
            await manager.reload()
            assert len(_failures(caplog)) == 2
            await manager.reload(retry_failed=True)                   # an explicit retry (SIGHUP)
            assert len(_failures(caplog)) == 3
            save_model(broken, echo())                                # fixed: loaded at the next poll
            await manager.reload()
        assert registry.resolve("echo").version == "2" and registry.get("echo").errors == {}
        assert len(_failures(caplog)) == 3
    manage(tmp_path, body)


def test_a_changed_version_that_fails_keeps_its_old_copy_and_is_logged_once(tmp_path, caplog):
    async def body(root, manager, registry):
        _model(root, "echo", "1")
        await manager.reload()
        old = registry.resolve("echo", "1")
        _write(root / "echo" / "1" / "model.onnx", "garbage")
        with caplog.at_level(logging.ERROR, logger="gateway.repository"):
            for _ in range(3):
                await manager.reload()
        assert _failures(caplog) == ["model echo version 1 failed to load"]
        assert registry.resolve("echo", "1") is old and "1" in registry.get("echo").errors
        assert (await _infer(registry)).outputs["probabilities"].shape == (1, 3)
    manage(tmp_path, body)


def test_a_rejected_config_is_logged_once_until_it_changes(tmp_path, caplog):
    async def body(root, manager, registry):
        _model(root, "echo")
        await manager.reload()
        mv = registry.resolve("echo")
        config = root / "echo" / "config.yaml"
        with caplog.at_level(logging.ERROR, logger="gateway.repository"):
            _write(config, "batching: {max_batch_sise: 8}\n")                 # a key that does not exist
            await manager.reload()
            await manager.reload()
            _write(config, "policy: {fallback: {chain: [{static: {probabilities: [1.0]}}]}}\n")
            await manager.reload()                                             # a policy that does not fit
            await manager.reload()
        assert _failures(caplog) == ["model echo", "model echo"]
        assert "policy.fallback.chain.0.static" in registry.get("echo").errors["config"]
        assert registry.resolve("echo") is mv
    manage(tmp_path, body)


def test_an_unreadable_root_is_logged_once_and_its_recovery_too(tmp_path, caplog):
    async def body(root, manager, registry):
        _model(root, "echo")
        await manager.reload()
        moved = root.with_name("elsewhere")
        root.rename(moved)
        with caplog.at_level(logging.INFO, logger="gateway.repository"):
            for _ in range(3):
                await manager.reload()
            moved.rename(root)
            await manager.reload()
        messages = [r.getMessage() for r in caplog.records]
        assert sum(m.startswith("cannot read model repository") for m in messages) == 1
        assert f"model repository {root} is readable again" in messages
        assert registry.resolve("echo").version == "1"
    manage(tmp_path, body)


def test_the_hook_runs_after_every_pass_with_the_registry_updated(tmp_path):
    seen, held = [], {}

    async def hook():
        seen.append(sorted(e.name for e in held["registry"].entries() if e.versions))

    async def body(root, manager, registry):
        held["registry"] = registry
        await manager.reload()
        _model(root, "echo")
        await manager.reload()
        shutil.rmtree(root / "echo")
        await manager.reload()
    manage(tmp_path, body, on_reloaded=hook)
    assert seen == [[], ["echo"], []]


def _profile(path: pathlib.Path, seed: int = 0) -> ReferenceProfile:
    x = np.random.default_rng(seed).normal(size=(500, 3))
    profile = ReferenceProfile(model="echo", version="1", rows=500, inputs={"features": feature_profile(x, 6)},
                               output=OutputProfile("classifier", "probabilities",
                                                    class_counts=np.array([200, 200, 100]),
                                                    top1_histogram=np.zeros(20, np.int64)))
    profile.save(path)
    return profile


def test_a_profile_beside_a_version_bins_its_input_statistics_and_follows_the_file(tmp_path, caplog):
    telemetry = Telemetry()

    def stats(mv):
        st = telemetry.model(mv.telemetry_id)
        return st, st.features["features"]

    async def body(root, manager, registry):
        _model(root, "echo", "1")
        given = _profile(root / "echo" / "1" / "profile.npz")
        with caplog.at_level(logging.INFO, logger="gateway.repository"):
            await manager.reload()
            st, fs = stats(registry.resolve("echo"))
            assert st.reference is not None and st.reference.rows == 500
            assert np.array_equal(fs.edges, given.inputs["features"].edges)        # binned by the profile
            assert "model echo@1: reference profile of 500 rows loaded" in caplog.text

            before = registry.resolve("echo")
            other = _profile(root / "echo" / "1" / "profile.npz", seed=1)           # changed: reloaded
            os.utime(root / "echo" / "1" / "profile.npz", ns=(1, 10**18))
            await manager.reload()
            assert registry.resolve("echo") is not before
            st, fs = stats(registry.resolve("echo"))
            assert np.array_equal(fs.edges, other.inputs["features"].edges)

            (root / "echo" / "1" / "profile.npz").write_bytes(b"garbage")           # unusable: still serving
            await manager.reload()
            await manager.reload()
            st, fs = stats(registry.resolve("echo"))
            assert st.reference is None and fs.edges is None                         # captured from first rows
            assert not registry.get("echo").errors
            assert np.allclose((await _infer(registry)).outputs["probabilities"], [[0.1, 0.7, 0.2]])
            rejected = [r for r in caplog.records if "reference profile rejected" in r.getMessage()]
            assert len(rejected) == 1 and "not a profile archive" in rejected[0].getMessage()

            (root / "echo" / "1" / "profile.npz").unlink()
            await manager.reload()
            assert stats(registry.resolve("echo"))[0].reference is None
    manage(tmp_path, body, observers=telemetry)


def test_a_profile_that_does_not_fit_the_model_is_rejected(tmp_path, caplog):
    telemetry = Telemetry()

    async def body(root, manager, registry):
        _model(root, "echo", "1")
        x = np.random.default_rng(0).normal(size=(50, 4))                          # 4 features, the model 3
        ReferenceProfile(model="echo", version="1", rows=50, inputs={"features": feature_profile(x, 4)},
                         output=OutputProfile("none")).save(root / "echo" / "1" / "profile.npz")
        with caplog.at_level(logging.INFO, logger="gateway.repository"):
            await manager.reload()
        assert telemetry.model(registry.resolve("echo").telemetry_id).reference is None
        assert "input 'features' has 4 features in the profile, 3 in the model" in caplog.text
    manage(tmp_path, body, observers=telemetry)


def test_a_model_unloaded_on_request_stays_out_until_loaded_again(tmp_path):
    async def body(root, manager, registry):
        _model(root, "echo", "1")
        _model(root, "other", "1")
        await manager.reload()
        old = registry.resolve("echo")
        await manager.unload_model("echo")
        assert registry.get("echo") is None and manager.unloaded() == ["echo"]
        await manager.reload(retry_failed=True)                       # later passes leave it out
        assert registry.get("echo") is None and registry.resolve("other").version == "1"
        await manager.unload_model("echo")                            # again: nothing to do, no error
        await manager.load_model("echo")
        assert registry.resolve("echo") is not old and manager.unloaded() == []
        await manager.reload()
        assert registry.get("echo") is not None
        for call in (manager.load_model, manager.unload_model):
            with pytest.raises(GatewayError) as info:
                await call("nope")
            assert info.value.status is Status.NOT_FOUND and "'nope'" in info.value.message
    manage(tmp_path, body)


def test_loading_a_model_that_cannot_load_says_why(tmp_path):
    async def body(root, manager, registry):
        (root / "broken" / "1").mkdir(parents=True)
        (root / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
        with pytest.raises(GatewayError) as info:
            await manager.load_model("broken")
        assert info.value.status is Status.UNAVAILABLE and "model.onnx" in info.value.message
    manage(tmp_path, body)
