"""Latency prediction: the fit on synthetic measurements (known parameters recovered, honest bands,
fallback to another group, store runs changing the fit), the features, the reference-CSV reader, the
Ethos-U hook, one real prediction from real host runs, and the SDK's zoo (deterministic builds, the
shipped reference CSV, host calibration feeding predict_targets). No assertion depends on this machine's
speed."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from conftest import const, make_model, write_profile
from onnx import helper

from edge_sdk import zoo
from edge_sdk.benchmark import benchmark
from edge_sdk.calibrate import reference_csv, zoo_files
from edge_sdk.demo import DEMO_MODEL
from edge_sdk.errors import ModelError, UsageError
from edge_sdk.latency_model import (
    GroupKey,
    OpClass,
    Params,
    features,
    fit,
    fit_params,
    model_seconds,
    nnls,
)
from edge_sdk.measurement import BenchmarkResult, Conditions, LatencyStats, Source
from edge_sdk.model import Model, load_model
from edge_sdk.predict import (
    FeatureCache,
    calibrate_host,
    predict,
    predict_targets,
    reference_measurements,
    store_measurements,
)
from edge_sdk.profile import Precision
from edge_sdk.runner import file_sha256
from edge_sdk.store import open_store
from edge_sdk.targets import data_dir, list_targets, load_target
from edge_sdk.zoo import calibration_models

# conv, depthwise, fc, fallback (s/MAC); activation byte, weight byte (s/B); node, transfer (s)
TRUTH = Params((2e-10, 1.2e-9, 4e-10, 2e-10, 4e-10, 1e-9, 4e-6, 4e-6))
FP32 = Precision.FP32


def conv_net(channels: int, blocks: int, size: int, seed: int) -> onnx.ModelProto:
    """A small depthwise-separable CNN: stem conv, `blocks` x (depthwise 3x3 + pointwise 1x1), pool, FC."""
    rng = np.random.default_rng(seed)
    nodes, inits, x, c = [], [], "x", 3
    for i, (out, group, k) in enumerate([(channels, 1, 3)] + [(channels, channels, 3), (channels, 1, 1)] * blocks):
        w = const(f"w{i}", rng.standard_normal((out, c // group, k, k)).astype(np.float32) * 0.1)
        inits.append(w)
        nodes += [
            helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], group=group, pads=[k // 2] * 4),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        x, c = f"r{i}", out
    inits.append(const("fc", rng.standard_normal((c, 10)).astype(np.float32)))
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    return make_model(nodes, [("x", [1, 3, size, size])], [("y", [1, 10])], inits)


@pytest.fixture(scope="session")
def family() -> list[Model]:
    shapes = [(8, 1, 16), (16, 2, 16), (32, 1, 24), (8, 3, 32), (24, 2, 32), (48, 1, 16), (16, 4, 24), (32, 3, 16)]
    shapes += [(64, 1, 24), (12, 2, 40), (40, 2, 20), (20, 3, 28)]
    return [load_model(conv_net(c, b, s, i), simplify=False) for i, (c, b, s) in enumerate(shapes)]


@pytest.fixture(scope="session")
def host_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A targets dir whose `host` has a fixed clock, cores and fp32 peak, so scaling is the same everywhere."""
    directory = tmp_path_factory.mktemp("targets")
    text = (Path(load_target("host").path)).read_text()
    text = text.replace("detect = true", "detect = false")
    text = text.replace("[compute]\n", "[compute]\ncores = 2\nclock_mhz = 3000\npeak_gops = { fp32 = 96.0 }\n", 1)
    (directory / "host.toml").write_text(text)
    return directory


def result(
    model: Model,
    latency_ms: float,
    *,
    target: str = "host",
    threads: int = 1,
    runtime: str = "onnxruntime",
    source: Source = Source.HOST,
) -> BenchmarkResult:
    conditions = Conditions("h", "cpu", "x86_64", "Linux", "3.11", runtime, "1.0", threads)
    return BenchmarkResult(
        source,
        model.name,
        model.sha256,
        target,
        None,
        1.0,
        1.0,
        LatencyStats.from_samples([latency_ms]),
        (latency_ms,),
        None,
        conditions,
        "0.1.0",
        "",
    )


def synthetic(
    models: list[Model],
    target: str,
    *,
    noise: float = 0.0,
    scale: float = 1.0,
    seed: int = 0,
    threads: int = 1,
    dirs: tuple[Path, ...] = (),
) -> list:
    """(features, result) pairs whose latency is TRUTH's (times `scale`) with log-normal noise."""
    rng = np.random.default_rng(seed)
    profile = load_target(target, dirs)
    pairs = []
    for m in models:
        f = features(m, profile, precision=FP32, runtime="onnxruntime")
        truth = model_seconds(f, TRUTH) * 1e3 * scale * math.exp(rng.normal(0.0, noise))
        pairs.append((f, result(m, truth, target=target, threads=threads)))
    return pairs


def test_nnls_matches_a_known_non_negative_solution():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.1, 1.0, (20, 4))
    x = np.array([1.5, 0.0, 2.0, 0.25])
    solved = nnls(a, a @ x)
    assert np.allclose(solved, x, atol=1e-8)
    assert (nnls(a, -(a @ x)) == 0).all()  # every unconstrained answer would be negative


def test_fit_recovers_the_parameters_of_noise_free_measurements(family):
    pairs = synthetic(family, "host")
    params = fit_params([f for f, _ in pairs], [r.latency_ms / 1e3 for _, r in pairs])
    for name in ("conv", "depthwise", "byte", "weight_byte", "node"):
        got, want = params[name], TRUTH[name]
        assert got == pytest.approx(want, rel=0.1), name
    for f, r in pairs:
        assert model_seconds(f, params) * 1e3 == pytest.approx(r.latency_ms, rel=0.02)


def test_the_band_of_noisy_measurements_contains_the_held_out_truth(family, host_like):
    pairs = synthetic(family, "host", noise=0.08, dirs=(host_like,))
    train, test = pairs[::2] + pairs[1:4:2], family[5::2]
    fitted = fit(train)
    group = fitted.groups[GroupKey("host", "onnxruntime", 1, FP32)]
    assert group.models == len(train) and group.log_sigma is not None and len(group.loo_errors) == len(train)
    inside = 0
    for model in test:
        truth = (
            model_seconds(
                features(model, load_target("host", (host_like,)), precision=FP32, runtime="onnxruntime"), TRUTH
            )
            * 1e3
        )
        p = predict(
            model,
            "host",
            precision=FP32,
            threads=1,
            runtime="onnxruntime",
            measurements=fitted,
            targets_dirs=(host_like,),
        ).prediction
        assert p is not None and p.method == "roofline-fit" and p.fit_models == len(train)
        assert p.low_ms < p.latency_ms < p.high_ms
        inside += p.low_ms <= truth <= p.high_ms
    assert inside >= len(test) - 1


def test_an_unmeasured_target_uses_the_host_fit_scaled_by_the_peak_ratio(family, host_like):
    fitted = fit(synthetic(family[:8], "host", dirs=(host_like,)))
    model = family[9]
    on_host = predict(
        model, "host", precision=FP32, threads=1, runtime="onnxruntime", measurements=fitted, targets_dirs=(host_like,)
    )
    on_pi = predict(
        model, "rpi5", precision=FP32, threads=4, runtime="onnxruntime", measurements=fitted, targets_dirs=(host_like,)
    )
    assert on_pi.source is Source.PREDICTED and on_pi.target == "rpi5"
    assert on_pi.prediction is not None and on_host.prediction is not None
    assert on_pi.prediction.method == "roofline-fit of host/onnxruntime/1t/fp32, scaled by peak ratio"
    # host 1 thread: 96 / 2 GOPS; rpi5 4 threads: 153.6 GOPS
    assert on_pi.extra["scale"]["compute"] == pytest.approx(48.0 / 153.6)
    # the host gives no bandwidth: memory time scales with the per-core peak, 48 / 38.4
    assert on_pi.extra["scale"]["memory"] == pytest.approx(1.25)
    assert on_pi.extra["scale"]["overhead"] == pytest.approx(3000 / 2400)
    # no op class may beat the Pi's 153.6 GFLOPS (2 ops per MAC), however the fit came out
    assert all(on_pi.extra["params"][name] >= 2 / 153.6e9 for name in ("conv", "depthwise", "fc", "fallback"))
    assert on_pi.prediction.high_ms / on_pi.prediction.low_ms > on_host.prediction.high_ms / on_host.prediction.low_ms
    with pytest.raises(UsageError, match="no litert measurements"):
        predict(model, "rpi5", precision=FP32, runtime="litert", measurements=fitted, targets_dirs=(host_like,))


def test_device_runs_in_the_store_replace_the_host_fallback(family, host_like, tmp_path):
    host_runs = synthetic(family[:8], "host", dirs=(host_like,))
    # the "device" is 3x slower than the host's parameters say, at 4 threads
    device = synthetic(family[:8], "rpi5", scale=3.0, threads=4)
    cache = FeatureCache()
    for m in family:
        cache.add(m, precision=FP32)
    with open_store(tmp_path / "runs.sqlite") as store:
        store.add_many([replace(r, source=Source.DEVICE) for _, r in device])
        stored = store_measurements(store, load_target("rpi5"), cache)
    assert len(stored) == 8
    model, truth = (
        family[10],
        3.0
        * model_seconds(features(family[10], load_target("rpi5"), precision=FP32, runtime="onnxruntime"), TRUTH)
        * 1e3,
    )
    before = predict(
        model,
        "rpi5",
        precision=FP32,
        threads=4,
        runtime="onnxruntime",
        measurements=host_runs,
        targets_dirs=(host_like,),
    ).prediction
    after = predict(
        model,
        "rpi5",
        precision=FP32,
        threads=4,
        runtime="onnxruntime",
        measurements=host_runs + stored,
        targets_dirs=(host_like,),
    ).prediction
    assert before is not None and after is not None
    assert before.method.startswith("roofline-fit of host") and after.method == "roofline-fit"
    assert abs(after.latency_ms / truth - 1) < 0.02 < abs(before.latency_ms / truth - 1)


def test_features_drop_fused_activations_and_classify_depthwise(family):
    f = features(family[1], load_target("rpi5"), precision=FP32, runtime="litert")
    assert OpClass.DEPTHWISE in f.op_class and OpClass.CONV in f.op_class and OpClass.FC in f.op_class
    assert OpClass.ELEMENTWISE not in f.op_class  # every Relu follows a Conv and is fused
    assert all(f.on_unit) and f.transfers == 0
    int8 = features(family[1], load_target("rpi5"), precision=Precision.INT8, runtime="litert")
    assert sum(int8.bytes_moved) * 4 == pytest.approx(sum(f.bytes_moved), rel=0.01)
    weights = sum(int(np.prod(t.dims)) for t in family[1].proto.graph.initializer)
    assert sum(f.weight_bytes) == 4 * weights and sum(int8.weight_bytes) == weights


def test_fallback_nodes_and_partition_transfers_are_counted(tmp_path):
    write_profile(tmp_path, ops="[ops.Conv]\n")  # Relu is fused; the Softmax falls back to the CPU
    w = const("w", np.ones((4, 3, 3, 3), np.float32))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Softmax", ["c"], ["s"], axis=1),
        helper.make_node("Conv", ["s", "w2"], ["y"]),
    ]
    w2 = const("w2", np.ones((4, 4, 1, 1), np.float32))
    model = load_model(make_model(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 4, 6, 6])], [w, w2]))
    f = features(model, load_target("test-npu", (tmp_path,)), precision=Precision.INT8, runtime="test-runtime")
    assert f.on_unit == (True, False, True) and f.transfers == 2
    assert f.transfer_bytes == 2 * 4 * 6 * 6  # the Conv output leaves the unit, the Softmax output returns


def test_reference_rows_map_to_profiles_by_soc(family, tmp_path):
    csv_path = tmp_path / "reference.csv"
    csv_path.write_text(
        textwrap.dedent("""\
        device,model,input,precision,runtime,threads,latency_ms,note,source,verified
        Raspberry Pi 4 (BCM2711),Net A,224x224,fp32,XNNPACK end2end_bench,multi (all cores),75,,readme,V
        Raspberry Pi 4 (BCM2711),Net B,224x224,fp32,XNNPACK end2end_bench,1,30,,readme,V
        Raspberry Pi 2 (BCM2836),Net A,224x224,fp32,XNNPACK end2end_bench,multi (all cores),341,,readme,V
        Pixel,Net A,224x224,fp32,XNNPACK end2end_bench,#big cores,43,,readme,V
        """)
    )
    pairs = reference_measurements(csv_path, {"Net A": family[0], "Net B": family[1]}, [load_target("rpi4b")])
    assert [(f.target, f.runtime, r.conditions.threads, r.latency_ms) for f, r in pairs] == [
        ("rpi4b", "litert", 4, 75.0),
        ("rpi4b", "litert", 1, 30.0),
    ]


def test_ethos_u_uses_vela_and_flags_untimed_cpu_ops(family, monkeypatch):
    with pytest.raises(UsageError, match="tflite="):
        predict(family[0], "ethos-u55-128")
    from edge_sdk import vela

    seen = []

    def fake_compile(tflite, profile):
        seen.append((tflite, profile.id))
        return SimpleNamespace(
            inference_time_ms=4.5,
            npu_ops=7,
            cpu_ops=1,
            cycles=2_250_000,
            system_config="Ethos_U55_High_End_Embedded",
            vela_version="4.x",
        )

    monkeypatch.setattr(vela, "compile_for_ethos_u", fake_compile)
    result = predict(family[0], "ethos-u55-128", tflite=b"TFL3-bytes")
    p = result.prediction
    assert seen == [(b"TFL3-bytes", "ethos-u55-128")]
    assert p is not None and p.method == "vela-estimate" and p.low_ms < p.latency_ms == 4.5 < p.high_ms
    assert result.extra["cpu_ops_not_timed"] is True and result.extra["precision"] == "int8"


def test_a_real_prediction_for_the_demo_model_on_host_and_rpi5(family, tmp_path):
    host = load_target("host")
    if host.compute.clock_mhz is None:
        pytest.skip("this machine reports no CPU clock, so the host fit cannot be scaled to rpi5")
    cache = FeatureCache()
    measured = []
    for i, model in enumerate([load_model(DEMO_MODEL), *family[:3]]):
        path = tmp_path / f"m{i}.onnx"
        onnx.save(model.proto, path)
        cache.add(model, file_sha256=file_sha256(path))
        run = benchmark(path, threads=1, runs=20, budget_s=0.2, warmup=1, target=host)
        found = cache.measurement(run, host)
        assert found is not None
        measured.append(found)
    for target, threads in (("host", 1), ("rpi5", 4)):
        p = predict(
            DEMO_MODEL, target, precision=FP32, threads=threads, runtime="onnxruntime", measurements=measured
        ).prediction
        assert p is not None and p.fit_models == 4
        assert 0 < p.low_ms <= p.latency_ms <= p.high_ms and math.isfinite(p.high_ms)


def test_predict_targets_reads_the_models_own_runs_from_the_store(host_like, tmp_path):
    demo = load_model(DEMO_MODEL)
    stored = replace(result(demo, 0.05), model_sha256=file_sha256(Path(DEMO_MODEL)), target=None)
    db = tmp_path / "runs.sqlite"
    with open_store(db) as store:
        store.add(stored)
    on_pi, on_host = predict_targets(DEMO_MODEL, ["rpi5", "host"], threads=1, db=db, targets_dirs=(host_like,))
    assert on_pi.prediction is not None and on_host.prediction is not None
    assert on_host.prediction.method == "roofline-fit" and on_host.prediction.fit_models == 1
    # one model: its own time refitted, nudged where a fitted class would beat the profile's peak
    assert on_host.prediction.low_ms <= 0.05 <= on_host.prediction.high_ms
    assert on_host.prediction.latency_ms == pytest.approx(0.05, rel=0.2)
    assert on_pi.prediction.method.startswith("roofline-fit of host/onnxruntime/1t/fp32")
    assert on_pi.extra["runtime"] == "onnxruntime" and on_pi.extra["precision"] == "fp32"
    with pytest.raises(ModelError, match=r"cannot read .*model\.tflite"):
        predict_targets(tmp_path / "model.tflite", ["rpi5"], db=db)  # a .tflite is read as it is; here none exists


def test_a_cpu_fit_is_not_scaled_to_an_accelerator(family, host_like):
    fitted = fit(synthetic(family[:4], "host", dirs=(host_like,)))
    with pytest.raises(UsageError, match="CPU fits do not carry over to GPUs"):
        predict(
            family[5],
            "rk3588-mali-g610",
            precision=FP32,
            runtime="onnxruntime",
            measurements=fitted,
            targets_dirs=(host_like,),
        )


# --- the SDK's zoo, the shipped reference latencies and host calibration ------------------------------

_HASH_SCRIPT = """
import hashlib, sys
from edge_sdk.calibrate import zoo_files
from edge_sdk.zoo import zoo_model
files = zoo_files(zoo_model(sys.argv[1]))
print(hashlib.sha256(files["onnxruntime"]).hexdigest(), hashlib.sha256(files["litert"]).hexdigest())
"""


def test_zoo_builds_and_their_files_are_the_same_bytes_in_every_process():
    for name, proto in calibration_models(quick=True):
        assert proto.graph.name == name
        assert proto.SerializeToString(deterministic=True) == zoo.build(name).SerializeToString(deterministic=True)
    name = zoo.QUICK_CALIBRATION[0]
    here = zoo_files(zoo.zoo_model(name))
    want = f"{hashlib.sha256(here['onnxruntime']).hexdigest()} {hashlib.sha256(here['litert']).hexdigest()}"
    # another interpreter with another string-hash seed: set and dict orders differ, the bytes may not
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", _HASH_SCRIPT, name], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    assert done.stdout.split() == want.split()


def test_the_reference_latencies_ship_in_the_targets_data_dir():
    path = reference_csv()
    assert path == data_dir("targets") / "reference_latencies.csv" and path.is_file()
    assert "source" in path.read_text().splitlines()[0].split(",")
    pairs = reference_measurements(path, zoo.reference_models(), list_targets())
    by_target: dict[str, set[str]] = {}
    for f, r in pairs:
        assert (f.runtime, f.precision, r.conditions.threads) == ("litert", FP32, 4)
        by_target.setdefault(f.target, set()).add(r.model_name)
    assert by_target == {"rpi4b": set(zoo.REFERENCE_NAMES), "rpi3b-plus": set(zoo.REFERENCE_NAMES)}


def test_calibrating_the_host_tightens_predict_targets(tmp_path, tiny_model_path):
    host = load_target("host")
    if host.compute.clock_mhz is None or not host.compute.cores:
        pytest.skip("this machine reports no CPU clock or cores, so host fits cannot be scaled to a device")
    db, threads = tmp_path / "runs.sqlite", host.compute.cores
    seen: list[tuple[int, int]] = []
    results = calibrate_host(db=db, quick=True, runs=3, budget_s=0.02, progress=lambda d, t, _: seen.append((d, t)))
    counts = len({1, threads})
    assert len(results) == len(zoo.QUICK_CALIBRATION) * 2 * counts and seen[-1] == (len(results), len(results))
    assert {r.target for r in results} == {"host"}
    assert {(r.conditions.runtime, r.conditions.threads) for r in results} == {
        (runtime, t) for runtime in ("litert", "onnxruntime") for t in {1, threads}
    }
    # the model's own host run, as `edge-sdk profile model.onnx` stores it
    own = benchmark(tiny_model_path, threads=threads, runs=3, budget_s=0.02, target=host)
    with open_store(db) as store:
        store.add(own)
        assert len(store.list_runs(target="host")) == len(results) + 1
    model = load_model(tiny_model_path)
    cache = FeatureCache()
    cache.add(model, file_sha256=file_sha256(tiny_model_path))
    alone = predict(model, "rpi4b", runtime="onnxruntime", measurements=[cache.measurement(own, host)]).prediction
    on_pi, on_host, on_pi5 = predict_targets(tiny_model_path, ["rpi4b", "host", "rpi5"], db=db)
    p = on_pi.prediction
    assert p is not None and alone is not None and alone.fit_models == 1
    # rpi4b: its own published (LiteRT) latencies, no scaling from elsewhere
    assert on_pi.extra["fit_group"] == "rpi4b/litert/4t/fp32" and p.method == "roofline-fit" and p.fit_models > 1
    assert p.low_ms <= p.latency_ms <= p.high_ms and p.high_ms / p.low_ms < alone.high_ms / alone.low_ms
    assert "warning" not in on_pi.extra
    # the host: the calibration runs and the model's own run, matched by the sha256 of their files
    assert on_host.prediction is not None and on_host.prediction.fit_models == len(zoo.QUICK_CALIBRATION) + 1
    assert on_host.extra["fit_group"] == f"host/onnxruntime/{threads}t/fp32"
    # rpi5 has no measurements of its own: scaled from the host, with a wide band and the way to tighten it
    assert on_pi5.extra["fit_group"].startswith("host/onnxruntime")
    assert "edge-sdk profile --calibrate" in on_pi5.extra["warning"] and "--device" in on_pi5.extra["warning"]


def test_a_tflite_from_any_converter_is_read_as_it_is(tmp_path):
    """A .tflite is predicted from its own operators: MACs as in the ONNX model, precision from its types."""
    from edge_sdk.export import export_tflite
    from edge_sdk.tflite_features import load_tflite

    demo = Path(__file__).parents[1] / "edge_sdk" / "assets" / "demo_mnist.onnx"
    path = tmp_path / "demo.int8.tflite"
    path.write_bytes(export_tflite(demo, "rpi5", precision="int8", calibration="demo", speed_threads=()).flatbuffer)
    model = load_tflite(path)
    assert model.precision is Precision.INT8
    feats = model.features(load_target("rpi5"), precision=model.precision, runtime="litert")
    assert sum(feats.macs) == 922_336
    failures: list[tuple[str, str]] = []
    results = predict_targets(path, ["rpi4b", "coral-edgetpu-usb"], db=tmp_path / "r.sqlite", failures=failures)
    assert [r.target for r in results] == ["rpi4b"]
    p = results[0].prediction
    assert p is not None and 0 < p.low_ms <= p.latency_ms <= p.high_ms
    assert failures and failures[0][0] == "coral-edgetpu-usb" and "measure on the device" in failures[0][1]


def test_a_truncated_tflite_is_a_model_error(tmp_path):
    from edge_sdk.errors import ModelError
    from edge_sdk.tflite_features import load_tflite

    path = tmp_path / "cut.tflite"
    path.write_bytes(b"\x18\x00\x00\x00TFL3" + b"\x00" * 8)
    with pytest.raises(ModelError, match=r"cut\.tflite"):
        load_tflite(path)
