import logging
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from segpipe.models import (
    LoadedModel,
    ModelCard,
    ModelError,
    ModelFormat,
    Precision,
    UNet,
    create_model,
    default_card,
    export_onnx,
    export_program,
    export_torchscript,
    load_model,
    load_model_cached,
    probe_geometry,
    save_checkpoint,
)
from segpipe.models.foundation import InputError
from tests.pipeline.oracles import TF32_ULPS, assert_labels_match, assert_logits_close

CONFIG = {"in_channels": 3, "num_classes": 3, "depth": 2, "base_width": 4, "padding": "valid"}
SIZES = [(2, 44, 44), (1, 60, 52)]  # batch, height, width: all valid for depth 2
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("unet", **CONFIG).eval()


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return default_card("unet", **CONFIG)


@pytest.fixture(scope="module")
def files(tmp_path_factory, net, card) -> dict[ModelFormat, Path]:
    folder = tmp_path_factory.mktemp("formats")
    paths = {
        ModelFormat.CHECKPOINT: folder / "net.pth",
        ModelFormat.EXPORTED: folder / "net.pt2",
        ModelFormat.TORCHSCRIPT: folder / "net.pt",
        ModelFormat.ONNX: folder / "net.onnx",
    }
    save_checkpoint(
        net, paths[ModelFormat.CHECKPOINT], architecture="unet", config=CONFIG, card=card
    )
    export_program(net, paths[ModelFormat.EXPORTED], card=card)
    export_torchscript(net, paths[ModelFormat.TORCHSCRIPT], card=card)
    export_onnx(net, paths[ModelFormat.ONNX], card=card)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths.values())
    return paths


def _assert_same_logits(loaded, net) -> None:
    for batch, height, width in SIZES:
        x = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.inference_mode():
            expected = net(x)
        got = loaded(x)
        assert got.dtype == torch.float32
        assert got.device == loaded.device
        assert got.shape == expected.shape == (batch, 3, height - 40, width - 40)
        # another format runs other kernels (ONNX Runtime's, the exported graph's, channels-last)
        assert_logits_close(got, expected)
        for got_one, expected_one in zip(got, expected):
            assert_labels_match(got_one.argmax(0), expected_one)


@pytest.mark.parametrize("kind", [f for f in ModelFormat if f is not ModelFormat.BUILTIN])
def test_round_trip(files, net, card, kind):
    loaded = load_model(files[kind])
    assert loaded.format is kind
    assert loaded.card == card
    assert loaded.in_channels == 3
    assert loaded.path == files[kind]
    assert loaded.device == torch.device("cpu")
    assert re.fullmatch(r"[0-9a-f]{64}", loaded.sha256)
    _assert_same_logits(loaded, net)


def test_exported_program_probes_like_eager(files, net):
    loaded = load_model(files[ModelFormat.EXPORTED])
    assert probe_geometry(loaded, 3, stride=4, base=64) == probe_geometry(net, 3, stride=4, base=64)


def test_sidecar_card_used_when_none_embedded(tmp_path, net, card):
    # The fallback is format-independent; ONNX is left out only because its export is slow.
    sidecar = card.to_json()
    for name, write in [
        ("a.pt2", lambda p: export_program(net, p, card=None)),
        ("b.pt", lambda p: export_torchscript(net, p, card=None)),
        ("c.pth", lambda p: save_checkpoint(net, p, architecture="unet", config=CONFIG, card=None)),
    ]:
        path = tmp_path / name
        write(path)
        assert load_model(path).card is None
        path.with_suffix(".json").write_text(sidecar, encoding="utf-8")
        loaded = load_model(path)
        assert loaded.card == card
        if name == "a.pt2":
            _assert_same_logits(loaded, net)


def test_embedded_card_wins_over_sidecar(tmp_path, files, card):
    path = tmp_path / "net.pth"
    shutil.copy(files[ModelFormat.CHECKPOINT], path)
    other = ModelCard.default("other", 3, 3)
    path.with_suffix(".json").write_text(other.to_json(), encoding="utf-8")
    assert load_model(path).card == card


def test_content_beats_extension(tmp_path, files, card):
    path = tmp_path / "actually_torchscript.pth"
    shutil.copy(files[ModelFormat.TORCHSCRIPT], path)
    loaded = load_model(path)
    assert loaded.format is ModelFormat.TORCHSCRIPT
    assert loaded.card == card


def test_torchscript_deprecation_becomes_one_log_warning(files, caplog):
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        load_model(files[ModelFormat.TORCHSCRIPT])
    assert not [w for w in caught if "deprecated" in str(w.message)]
    messages = [r.getMessage() for r in caplog.records if "TorchScript" in r.getMessage()]
    assert len(messages) == 1


def test_builtin_name_is_seeded_and_does_not_touch_global_rng():
    state = torch.random.get_rng_state()
    first = load_model("unet")
    assert torch.equal(torch.random.get_rng_state(), state)
    second = load_model("unet")
    assert first.format is ModelFormat.BUILTIN
    assert first.path is None
    assert first.sha256 == second.sha256
    assert first.card == default_card("unet")
    assert isinstance(UNet, type)


def test_missing_file():
    with pytest.raises(ModelError, match="does not exist"):
        load_model("/nonexistent/model.pt2")


def test_unknown_name_lists_known():
    with pytest.raises(ModelError, match="known names: unet, segnet, fcn_resnet50"):
        load_model("unetz")


@pytest.mark.parametrize("name", ["garbage.pt", "garbage.pt2", "garbage.onnx", "garbage.pth"])
def test_garbage_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00\x01 this is not a model \xff" * 10)
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert name in str(info.value)
    assert "\n" not in str(info.value)


def test_bare_state_dict(tmp_path, net):
    path = tmp_path / "weights.pth"
    torch.save(net.state_dict(), path)
    with pytest.raises(ModelError, match=r"bare state_dict.*architecture.*save_checkpoint"):
        load_model(path)


def test_pickled_module_is_refused(tmp_path, net):
    path = tmp_path / "module.pt"
    torch.save(net, path)
    with pytest.raises(ModelError, match="weights_only=True"):
        load_model(path)


def test_checkpoint_with_wrong_weights(tmp_path):
    other = create_model("unet", **{**CONFIG, "base_width": 8})
    with pytest.raises(ModelError, match="do not match architecture"):
        save_checkpoint(other, tmp_path / "x.pth", architecture="unet", config=CONFIG, card=None)
    assert not (tmp_path / "x.pth").exists()


def test_card_bands_must_match_model(tmp_path, net):
    path = tmp_path / "net.pth"
    save_checkpoint(net, path, architecture="unet", config=CONFIG, card=None)
    path.with_suffix(".json").write_text(ModelCard.default("m", 4, 3).to_json(), "utf-8")
    with pytest.raises(ModelError, match="bands=4"):
        load_model(path)


def test_bad_sidecar_is_reported(tmp_path, net):
    path = tmp_path / "net.pth"
    save_checkpoint(net, path, architecture="unet", config=CONFIG, card=None)
    path.with_suffix(".json").write_text('{"name": "m"}', "utf-8")
    with pytest.raises(ModelError, match=r"sidecar card 'net\.json'.*bands"):
        load_model(path)


def test_bad_device_and_bad_input(files):
    with pytest.raises(InputError, match="--device 'tpu'"):
        load_model(files[ModelFormat.CHECKPOINT], device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device is available"):
            load_model(files[ModelFormat.CHECKPOINT], device="cuda")
    loaded = load_model(files[ModelFormat.CHECKPOINT])
    with pytest.raises(ModelError, match="expects 3"):
        loaded(torch.zeros(1, 4, 44, 44))
    with pytest.raises(ModelError, match="N×C×H×W"):
        loaded(torch.zeros(3, 44, 44))


def test_no_unsafe_torch_load_in_models():
    for source in MODELS_DIR.rglob("*.py"):
        for call in re.findall(r"torch\.load\([^)]*\)", source.read_text(encoding="utf-8")):
            assert "weights_only=True" in call, f"{source.name}: {call}"


@pytest.mark.gpu
@pytest.mark.parametrize("kind", [f for f in ModelFormat if f is not ModelFormat.BUILTIN])
def test_round_trip_on_cuda(files, net, kind):
    loaded = load_model(files[kind], device="cuda")
    x = torch.rand(2, 3, 44, 44)
    with torch.inference_mode():
        expected = net(x)
    got = loaded(x)
    assert got.device.type == "cuda"
    assert_logits_close(got.cpu(), expected, ulps=TF32_ULPS)


class _SizeBranching(torch.nn.Module):
    in_channels = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] == 48:
            return x * 2
        return x


def test_export_refuses_a_model_specialized_to_the_example_size(tmp_path):
    path = tmp_path / "fixed.pt2"
    with pytest.raises(ModelError, match="fixed the input's H"):
        export_program(_SizeBranching(), path, card=None, example_size=48)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- predict


def _host_batch(seed: int, shape=(2, 3, 92, 92)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize("kind", [ModelFormat.CHECKPOINT, ModelFormat.EXPORTED])
def test_predict_fp32_is_bit_identical_to_the_eager_module(files, net, kind):
    loaded = load_model(files[kind])
    x = _host_batch(0)
    layout = torch.channels_last if loaded.channels_last else torch.contiguous_format
    with torch.no_grad():
        nchw = net(torch.from_numpy(x.copy()))
        same_layout = net(torch.from_numpy(x.copy()).contiguous(memory_format=layout))
    got = loaded.predict(x)
    assert got.dtype == torch.float32
    assert got.device == loaded.device
    assert got.shape == (2, 3, 52, 52)
    if kind is ModelFormat.CHECKPOINT:  # the same eager kernels on the same layout: the same bits
        assert torch.equal(got, same_layout)
    # channels-last kernels may differ from NCHW ones in the last bits, never more
    assert_logits_close(got, nchw)


def test_predict_converts_any_host_array_like_a_float32_copy(files):
    loaded = load_model(files[ModelFormat.CHECKPOINT])
    x = _host_batch(1, (3, 2, 60, 52))
    strided = np.swapaxes(x.astype(np.float64), 0, 1)  # non-contiguous float64, N×C = 2×3
    assert torch.equal(
        loaded.predict(strided), loaded.predict(np.ascontiguousarray(x.swapaxes(0, 1)))
    )


def test_predict_bf16_agrees_with_fp32_labels(files):
    loaded = load_model(files[ModelFormat.CHECKPOINT])
    x = _host_batch(2)
    fp32 = loaded.predict(x, precision=Precision.FP32)
    bf16 = loaded.predict(x, precision=Precision.BF16)
    assert bf16.dtype == torch.float32
    assert bf16.shape == fp32.shape
    assert not torch.equal(bf16, fp32)  # autocast did run in bf16
    agreement = (bf16.argmax(1) == fp32.argmax(1)).double().mean().item()
    assert agreement >= 0.99
    assert torch.equal(loaded.predict(x, precision="bf16"), bf16)  # plain strings work too


def test_predict_and_call_validate_alike(files):
    loaded = load_model(files[ModelFormat.CHECKPOINT])
    with pytest.raises(ModelError, match="expects 3"):
        loaded.predict(np.zeros((1, 4, 44, 44), np.float32))
    with pytest.raises(ModelError, match="N×C×H×W"):
        loaded.predict(np.zeros((3, 44, 44), np.float32))
    with pytest.raises(InputError, match="precision 'fp16'"):
        loaded.predict(np.zeros((1, 3, 44, 44), np.float32), precision="fp16")  # type: ignore[arg-type]
    squeezed = LoadedModel(
        lambda x: x[:, 0],
        card=None,
        sha256="0" * 64,
        format=ModelFormat.BUILTIN,
        path=None,
        device=torch.device("cpu"),
        in_channels=None,
    )
    with pytest.raises(ModelError, match=r"returned \[2, 8, 8\].*N×K×h×w"):
        squeezed.predict(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ModelError, match=r"returned \[2, 8, 8\].*N×K×h×w"):
        squeezed(torch.zeros(2, 3, 8, 8))


@pytest.mark.gpu
def test_predict_on_cuda(files, net):
    loaded = load_model(files[ModelFormat.CHECKPOINT], device="cuda")
    x = _host_batch(3)
    with torch.no_grad():
        expected = net(torch.from_numpy(x.copy()))
    fp32 = loaded.predict(x)
    bf16 = loaded.predict(x, precision=Precision.BF16)
    assert fp32.device.type == bf16.device.type == "cuda"
    assert fp32.dtype == bf16.dtype == torch.float32
    assert_logits_close(fp32.cpu(), expected, ulps=TF32_ULPS)
    agreement = (bf16.argmax(1) == fp32.argmax(1)).double().mean().item()
    assert agreement >= 0.99


# --------------------------------------------------------------------------------- cache


def _save_seeded(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    model = create_model("unet", **CONFIG)
    save_checkpoint(model, path, architecture="unet", config=CONFIG, card=None)


def test_cached_model_is_reused_and_reloaded_when_the_file_changes(tmp_path):
    path = tmp_path / "net.pth"
    _save_seeded(path, 1)
    first = load_model_cached(str(path), "cpu")
    assert load_model_cached(str(path), "cpu") is first
    assert load_model_cached(str(path), "cpu", sha256=first.sha256) is first
    before = path.stat()
    _save_seeded(path, 2)  # retrained: same size, new weights
    assert path.stat().st_size == before.st_size
    # Give the new file a distinct mtime: two saves may fall in one clock tick.
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    second = load_model_cached(str(path), "cpu")
    assert second is not first
    assert second.sha256 != first.sha256
    x = torch.rand(1, 3, 44, 44, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(first(x), second(x))


def test_cache_holds_one_model(tmp_path, files):
    first = load_model_cached(str(files[ModelFormat.CHECKPOINT]), "cpu")
    other = load_model_cached(str(files[ModelFormat.EXPORTED]), "cpu")
    assert other is not first
    assert load_model_cached(str(files[ModelFormat.CHECKPOINT]), "cpu") is not first


def test_cached_model_with_a_wrong_hash_names_the_file(tmp_path):
    path = tmp_path / "planned.pth"
    _save_seeded(path, 3)
    planned = load_model_cached(str(path), "cpu").sha256
    stale = "f" * 64
    with pytest.raises(ModelError) as info:
        load_model_cached(str(path), "cpu", sha256=stale)
    message = str(info.value)
    assert str(path) in message
    assert "changed since the run was planned" in message
    assert f"{stale[:12]}… → {planned[:12]}…" in message


def test_cached_registry_name(tmp_path):
    first = load_model_cached("unet", "cpu")
    assert first.format is ModelFormat.BUILTIN
    assert load_model_cached("unet", "cpu", sha256=first.sha256) is first
    with pytest.raises(ModelError, match="'unet' built here differs"):
        load_model_cached("unet", "cpu", sha256="0" * 64)
