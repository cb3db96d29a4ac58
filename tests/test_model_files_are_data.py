"""Model files are data: nothing in a model file or its card runs while segpipe loads it.

Each malicious file would create the file ``PWNED`` in the folder it is loaded from, if it ran;
``segpipe run`` must refuse it (exit 2, one ``error:`` line naming the file and why) and
``PWNED`` must not exist afterwards. The exported programs (.pt2) are shown to be live: plain
``torch.export.load`` does create ``PWNED``. A card full of shell and Python syntax is only
text: the run works and the class names reach the output verbatim.
"""

from __future__ import annotations

import ast
import io
import json
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import rasterio
import torch

from tests.corpus.harness import (
    REPO,
    BadCase,
    Call,
    case_params,
    check_bad_case,
    documented,
    prefect_server,
    run_segpipe,
    shown,
)
from tests.corpus.makers import scene
from tests.corpus.test_models import program

TITLE = "Model files are data"
HELD = ("exit 2 before anything in the file is unpickled, evaluated or run, one `error:` line "
        "naming the file and why; the file the payload would create is never created")
MARK = "PWNED"


class Payload:
    """Unpickling this creates ``PWNED`` in the working folder (``open(MARK, 'w')``)."""

    def __reduce__(self):
        return (open, (MARK, "w"))


def _rewrite(source: Path, target: Path, change: Callable[[str, bytes], bytes | None],
             add: dict[str, bytes] | None = None) -> None:
    """Copy a zip member by member; ``change(inner name, data)`` replaces (or drops: None)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            inner = info.filename.split("/", 1)[1]
            data = change(inner, zin.read(info.filename))
            if data is not None:
                zout.writestr(info, data)
        for inner, data in (add or {}).items():
            zout.writestr(f"{root}/{inner}", data)


def _graph(change: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
    def edit(inner: str, data: bytes) -> bytes:
        if inner.startswith("models/") and inner.endswith(".json"):
            graph = json.loads(data)
            change(graph)
            return json.dumps(graph).encode()
        return data

    return edit


def _each(node: object, key: str, edit: Callable[[str], str]) -> None:
    """Apply ``edit`` to every string under ``key`` in a JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, str):
                node[k] = edit(v)
            else:
                _each(v, key, edit)
    elif isinstance(node, list):
        for v in node:
            _each(v, key, edit)


# ------------------------------------------------------------------------- the model files


def checkpoint_pickle(folder: Path) -> str:
    """A torch.save checkpoint (zip) whose dict holds the payload."""
    torch.save({"format": "segpipe-checkpoint", "version": 1, "architecture": "unet",
                "config": {}, "state_dict": {}, "card": Payload()}, folder / "model.pt")
    return "model.pt"


def legacy_pickle(folder: Path) -> str:
    """A bare protocol-2 pickle named ``.pt`` (torch's legacy checkpoint format)."""
    (folder / "model.pt").write_bytes(pickle.dumps(Payload(), protocol=2))
    return "model.pt"


def plain_pickle(folder: Path) -> str:
    """A protocol-5 pickle named ``.pth``."""
    (folder / "model.pth").write_bytes(pickle.dumps(Payload(), protocol=5))
    return "model.pth"


def torchscript_pickle(folder: Path) -> str:
    """A TorchScript-shaped archive whose data.pkl and constants.pkl hold the payload."""
    with zipfile.ZipFile(folder / "model.pt", "w") as archive:
        archive.writestr("model/code/__torch__.py", "x = 1\n")
        archive.writestr("model/data.pkl", pickle.dumps(Payload(), protocol=2))
        archive.writestr("model/constants.pkl", pickle.dumps(Payload(), protocol=2))
        archive.writestr("model/version", "3\n")
    return "model.pt"


def pt2_sample_inputs(folder: Path) -> str:
    """An exported program whose pickled sample inputs hold the payload."""
    buffer = io.BytesIO()
    torch.save((Payload(),), buffer)

    def change(inner: str, data: bytes) -> bytes:
        return buffer.getvalue() if inner.startswith("data/sample_inputs/") else data

    _rewrite(folder / program(folder, "plain", "valid.pt2"), folder / "model.pt2", change)
    (folder / "valid.pt2").unlink()
    return "model.pt2"


def pt2_shape_expression(folder: Path) -> str:
    """An exported program whose symbolic sizes are Python that torch would evaluate."""
    code = f"(__import__('pathlib').Path('{MARK}').touch(), {{}})[1]"
    edit = _graph(lambda g: _each(g, "expr_str", lambda v: code.format(v)))
    _rewrite(folder / program(folder, "plain", "valid.pt2"), folder / "model.pt2", edit)
    (folder / "valid.pt2").unlink()
    return "model.pt2"


def pt2_call_target(folder: Path) -> str:
    """An exported program whose graph calls ``os.system`` (reachable from ``torch``)."""
    edit = _graph(lambda g: _each(g, "target", lambda v: "torch.serialization.os.system"))
    _rewrite(folder / program(folder, "plain", "valid.pt2"), folder / "model.pt2", edit)
    (folder / "valid.pt2").unlink()
    return "model.pt2"


def pt2_native_code(folder: Path) -> str:
    """An exported program with an AOTInductor library (native code) beside its graph."""
    _rewrite(folder / program(folder, "plain", "valid.pt2"), folder / "model.pt2",
             lambda inner, data: data, {"data/aotinductor/model/model.so": b"\x7fELF"})
    (folder / "valid.pt2").unlink()
    return "model.pt2"


def pt2_opaque_constant(folder: Path) -> str:
    """An exported program with an opaque constant: a pickle torch reads with pickle.loads."""
    config = {"config": {"evil": {"path_name": "opaque_obj_0", "is_param": False,
                                  "use_pickle": True, "tensor_meta": None}}}

    def change(inner: str, data: bytes) -> bytes:
        if inner.startswith("data/constants/") and inner.endswith("_config.json"):
            return json.dumps(config).encode()
        return data

    _rewrite(folder / program(folder, "plain", "valid.pt2"), folder / "model.pt2", change,
             {"data/constants/opaque_obj_0": pickle.dumps(Payload())})
    (folder / "valid.pt2").unlink()
    return "model.pt2"


def card_too_deep(folder: Path) -> str:
    """A cardless program with a sidecar card nested 100 000 levels deep (a JSON bomb)."""
    name = program(folder, "plain")
    (folder / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    return name


def segment(make_model: Callable[[Path], str]) -> Callable[[Path], Call]:
    def make(folder: Path) -> Call:
        scene(folder)
        return Call(("run", "--input", "scene.tif", "--output", "mask.tif", "--model",
                     make_model(folder)))

    return make


MORE_ROWS = {
    "card-of-shell-and-python-syntax": (
        "a sidecar card whose class names and description are shell and Python syntax "
        "(must work: the names reach the output verbatim)", 0),
}
REFUSED = ("refused", "data only")
CASES = {
    "checkpoint-with-a-pickled-object": BadCase(
        "a torch.save checkpoint holding an object whose unpickling opens a file",
        segment(checkpoint_pickle), ("model.pt", *REFUSED, "io.open")),
    "legacy-pickle-named-pt": BadCase(
        "a protocol-2 pickle of that object named `model.pt` (torch's legacy format)",
        segment(legacy_pickle), ("model.pt", *REFUSED)),
    "plain-pickle-named-pth": BadCase(
        "a protocol-5 pickle of that object named `model.pth`", segment(plain_pickle),
        ("model.pth", "not a recognised model")),
    "torchscript-with-a-pickled-object": BadCase(
        "a TorchScript-shaped archive whose data.pkl holds that object",
        segment(torchscript_pickle), ("model.pt", "cannot be loaded")),
    "pt2-pickled-sample-inputs": BadCase(
        "a .pt2 whose sample inputs are a pickle of that object (torch.export.load runs it)",
        segment(pt2_sample_inputs), ("model.pt2", *REFUSED)),
    "pt2-shape-expression-is-python": BadCase(
        "a .pt2 whose shape expressions are Python (torch.export.load evaluates them)",
        segment(pt2_shape_expression), ("model.pt2", "refused", "shape expression")),
    "pt2-graph-calls-os-system": BadCase(
        "a .pt2 whose graph nodes call `torch.serialization.os.system`",
        segment(pt2_call_target), ("model.pt2", "refused", "not an operator")),
    "pt2-with-native-code": BadCase(
        "a .pt2 carrying an AOTInductor library (native code torch.export.load would load)",
        segment(pt2_native_code), ("model.pt2", "refused", "native code")),
    "pt2-opaque-constant": BadCase(
        "a .pt2 with an opaque constant (torch would pickle.loads it)",
        segment(pt2_opaque_constant), ("model.pt2", "refused", "pickle.loads")),
    "card-nested-100000-deep": BadCase(
        "a sidecar card nested 100 000 levels deep", segment(card_too_deep),
        ("model card", "fix the card")),
}


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """The corpus's Prefect server (one per test process)."""
    return prefect_server()


#: the cases `make test` runs; the others are in the slow set
QUICK = {"checkpoint-with-a-pickled-object", "pt2-graph-calls-os-system", "card-nested-100000-deep"}


@pytest.mark.parametrize("case_id", case_params(CASES, QUICK))
def test_a_model_file_that_would_run_code_is_refused_and_nothing_runs(
    case_id: str, tmp_path: Path, prefect_api: str
):
    check_bad_case(case_id, CASES[case_id], tmp_path, prefect_api)
    assert not (tmp_path / MARK).exists()


@pytest.mark.parametrize("make", [pt2_sample_inputs, pt2_shape_expression, pt2_opaque_constant])
def test_the_malicious_exported_programs_are_live_torch_export_load_runs_them(
    make: Callable[[Path], str], tmp_path: Path
):
    """The oracle for the .pt2 cases: without segpipe's check, loading runs the payload."""
    name = make(tmp_path)
    subprocess.run([sys.executable, "-c", f"import torch; torch.export.load({name!r})"],
                   cwd=tmp_path, capture_output=True, timeout=300, check=False)
    assert (tmp_path / MARK).exists()


def test_a_card_of_shell_and_python_syntax_is_only_text(tmp_path: Path, prefect_api: str):
    names = ["$(touch PWNED)", "{__import__('os').system('touch PWNED')}", "`touch PWNED`"]
    card = {"name": "; touch PWNED", "bands": 3, "halo": 0, "description": "%(x)s {0!r} $HOME",
            "classes": [{"name": names[0], "color": "#0000ff"},
                        {"name": names[1], "color": "#00a000"}]}
    model = program(tmp_path, "plain")
    (tmp_path / "model.json").write_text(json.dumps(card))
    scene(tmp_path)
    result = run_segpipe(["run", "--workers", "0", "--quiet", "--input", "scene.tif",
                          "--output", "mask.tif", "--model", model], tmp_path, api=prefect_api)
    assert result.returncode == 0 and not result.stderr.strip(), shown(result)
    with rasterio.open(tmp_path / "mask.tif") as out:
        assert json.loads(out.tags()["CLASS_NAMES"]) == names[:2]
        assert out.tags()["SEGPIPE_MODEL"] == card["name"]
    assert not (tmp_path / MARK).exists()
    documented("card-of-shell-and-python-syntax", 0, "")


# ------------------------------------------------------------------- the code, statically

PRODUCT = [REPO / d for d in ("models", "pipeline", "flows", "scripts")]


def _calls(path: Path) -> list[tuple[str, ast.Call, ast.AST | None]]:
    """(dotted callee, call, innermost enclosing function) of every call in a file."""
    out: list[tuple[str, ast.Call, ast.AST | None]] = []

    def visit(node: ast.AST, func: ast.AST | None) -> None:
        if isinstance(node, ast.Call):
            out.append((ast.unparse(node.func), node, func))
        inner = node if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else func
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), None)
    return out


def test_checkpoints_load_only_with_weights_only_and_nothing_else_unpickles():
    files = [p for root in PRODUCT for p in root.rglob("*.py")]
    torch_loads = unpicklers = 0
    for path in files:
        calls = _calls(path)
        for callee, call, func in calls:
            where = f"{path.relative_to(REPO)}:{call.lineno}"
            if callee == "torch.load":
                torch_loads += 1
                safe = [k for k in call.keywords if k.arg == "weights_only"]
                assert safe and isinstance(safe[0].value, ast.Constant) and \
                    safe[0].value.value is True, f"{where}: torch.load without weights_only=True"
            assert callee not in ("pickle.load", "pickle.loads", "pickle.Unpickler",
                                  "dill.load", "joblib.load"), f"{where}: {callee}"
            if callee in ("torch.export.load", "torch.jit.load"):
                unpicklers += 1
                assert path == REPO / "models" / "formats.py", f"{where}: {callee}"
            if callee == "torch.export.load":
                checked = [n.lineno for c, n, f in calls
                           if f is func and c == "check_exported_program"]
                assert checked and min(checked) < call.lineno, (
                    f"{where}: torch.export.load without check_exported_program before it")
    assert torch_loads >= 3 and unpicklers == 2  # the scan saw the loaders it guards


def test_fresh_exports_of_the_architectures_pass_the_check(tmp_path: Path):
    """The check refuses the malicious files above, not the programs segpipe exports."""
    from segpipe.models.dataonly import check_exported_program
    from segpipe.models.registry import create_model
    from segpipe.models.saving import export_program

    for name, config in (("unet", {"depth": 2, "base_width": 4}), ("segnet", {"depth": 2}),
                         ("lraspp_mobilenet_v3_large", {})):
        path = tmp_path / f"{name}.pt2"
        export_program(create_model(name, in_channels=3, num_classes=2, **config), path,
                       card=None, in_channels=3)
        check_exported_program(str(path))  # raises ModelError naming what it refuses
