"""Model files are data: refuse what would run code while an exported program (.pt2) loads.

A segpipe checkpoint is read with ``torch.load(weights_only=True)``, which rebuilds tensors and
plain containers and refuses every other Python object. TorchScript files are read by
TorchScript's own loader, which rebuilds tensors and TorchScript classes only, and ONNX files
are protocol buffers: neither calls Python code while loading.

``torch.export.load`` is less strict. It unpickles sample inputs and some weights and constants
with ``weights_only=False`` (falling back to it when the safe load fails), unpickles "opaque"
constants with plain :func:`pickle.loads`, loads AOTInductor native libraries when the archive
has them, resolves every node's operator name by attribute lookups from ``torch`` (any
callable reachable from there), and parses symbolic shape expressions with ``sympy.sympify``,
which evaluates Python. :func:`check_exported_program` reads the archive first, without
unpickling or evaluating anything, and raises :class:`ModelError` naming the part that would
run code:

- every pickle the loader would unpickle (``*.pt`` members, weights and constants whose
  payload config says ``use_pickle``) must load with ``torch.load(weights_only=True)``;
- no opaque (Python-pickled) constants and no AOTInductor native code;
- node targets must be operators (``torch.ops.<namespace>.<op>[.<overload>]``, the symbolic
  ``torch.sym_*`` functions, arithmetic from ``operator`` and ``math``);
- shape expressions may hold only sympy's arithmetic and comparisons, symbol names and numbers.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from .foundation import ModelError

__all__ = ["check_exported_program", "pickle_refusal"]

# operator-module and math functions a graph may call (torch's symbolic-shape arithmetic)
_OPERATOR_NAMES = frozenset((
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "eq", "ne",
    "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift",
    "getitem",
))
_MATH_NAMES = frozenset((
    "ceil", "floor", "trunc", "sqrt", "exp", "log", "log2", "isnan", "isinf",
))
_DUNDER_OPS = frozenset((
    "__and__", "__or__", "__xor__", "__lshift__", "__rshift__", "__iand__", "__ior__",
    "__ixor__", "__ilshift__", "__irshift__",
))
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TORCH_OP = re.compile(rf"torch\.ops\.{_NAME}\.(?P<op>{_NAME})(\.{_NAME})?")
_SYM_FUNCTION = re.compile(r"torch\._?sym_[a-z]+")
# what a shape expression may name (sympy's srepr of torch's symbolic sizes)
_SYMPY_NAMES = frozenset((
    "Symbol", "Integer", "Float", "Rational", "Mul", "Add", "Pow", "Max", "Min", "Abs", "Mod",
    "FloorDiv", "CeilDiv", "CleanDiv", "ModularIndexing", "Where", "PythonMod", "CeilToInt",
    "FloorToInt", "IntTrueDiv", "FloatTrueDiv", "LShift", "RShift", "TruncToInt",
    "TruncToFloat", "RoundToInt", "RoundDecimal", "ToFloat", "FloatPow", "PowByNatural",
    "Identity", "IsNonOverlappingAndDenseIndicator", "Eq", "Ne", "Lt", "Le", "Gt", "Ge",
    "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality",
    "And", "Or", "Not", "Piecewise", "ExprCondPair", "BooleanTrue", "BooleanFalse", "true",
    "false", "True", "False", "oo", "zoo", "nan", "Infinity", "NegativeInfinity", "NaN", "Half",
    "One", "NegativeOne", "Zero", "positive", "negative", "nonnegative", "nonpositive",
    "integer", "real", "finite", "zero", "precision",
))
_SYMPY_PREFIXES = ("OpaqueUnaryFn_", "BitwiseFn_")
_QUOTED = re.compile(rf"'({_NAME}|[-+]?\d+(\.\d*)?([eE][-+]?\d+)?)'")
_SYMBOL = re.compile(r"[a-z]{1,4}\d+")  # torch's size symbols: s0, u1, ps2 ...
_NUMBER = re.compile(r"(?<![A-Za-z0-9_])\d+(\.\d*)?([eE][-+]?\d+)?")
_EXPRESSION_CHARS = re.compile(r"[A-Za-z0-9_ (),=+\-*/%<>!&|~]*")


def pickle_refusal(name: str, exc: BaseException) -> ModelError:
    """The error for a pickle that ``torch.load(weights_only=True)`` refused."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    what = f"a pickled Python object ({found.group(1)})" if found else "pickled Python objects"
    return ModelError(
        f"model file {name!r} is refused: it holds {what} that would run code when loaded, and "
        "segpipe reads model files as data only (torch.load weights_only=True); save the model "
        "with segpipe.models.save_checkpoint or export_program, or export it to ONNX"
    )


def check_exported_program(path: str) -> None:
    """Refuse an exported program whose loading would run code (see the module docstring)."""
    name = PurePosixPath(path).name
    try:
        with zipfile.ZipFile(path) as archive:
            members = {_inner(m): m for m in archive.namelist()}
            for inner in _pickled_members(archive, members, name):
                _check_weights_only(archive, members[inner], name)
            for inner in members:
                if inner.startswith(_constants().AOTINDUCTOR_DIR):
                    raise ModelError(
                        f"model file {name!r} is refused: it holds AOTInductor native code "
                        f"({inner}), which segpipe does not load; export the model with "
                        "segpipe.models.export_program (no AOTInductor package)"
                    )
            for inner in members:
                if inner.startswith(_constants().MODELS_DIR) and inner.endswith(".json"):
                    _check_graph(json.loads(archive.read(members[inner])), name)
    except ModelError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, RecursionError) as exc:
        raise ModelError(
            f"exported program {name!r} cannot be read ({type(exc).__name__}: {exc}); "
            "re-export it with segpipe.models.export_program"
        ) from None


def _constants() -> Any:
    from torch.export.pt2_archive import constants

    return constants


def _inner(member: str) -> str:
    """A member's name inside the archive's root folder (how torch's reader names it)."""
    return member.split("/", 1)[1] if "/" in member else member


def _pickled_members(
    archive: zipfile.ZipFile, members: dict[str, str], name: str
) -> Iterator[str]:
    """The members torch.export.load would unpickle (refusing opaque objects outright)."""
    c = _constants()
    for inner in members:
        if inner.endswith((".pt", ".pkl")):
            yield inner
    for folder, kind in ((c.WEIGHTS_DIR, "weights"), (c.CONSTANTS_DIR, "constants")):
        for inner in [m for m in members if m.startswith(folder) and m.endswith("_config.json")]:
            config = json.loads(archive.read(members[inner])).get("config") or {}
            for fqn, meta in config.items():
                file = str(meta.get("path_name", ""))
                if file.startswith(c.OPAQUE_OBJ_FILENAME_PREFIX):
                    raise ModelError(
                        f"model file {name!r} is refused: "
                        f"its constant {fqn!r} is a Python object that torch would unpickle "
                        "with pickle.loads, which can run code; export the model without "
                        f"opaque {kind}"
                    )
                if meta.get("use_pickle") and folder + file in members:
                    yield folder + file


def _check_weights_only(archive: zipfile.ZipFile, member: str, name: str) -> None:
    import torch

    data = io.BytesIO(archive.read(member))
    try:
        torch.load(data, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise pickle_refusal(name, exc) from None


def _strings(node: Any, key: str | None = None) -> Iterator[tuple[str | None, str]]:
    """Every (key, string) pair in a JSON tree; list items keep their list's key."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v, key)
    elif isinstance(node, str):
        yield key, node


def _check_graph(graph: Any, name: str) -> None:
    for key, text in _strings(graph):
        if key == "target" and not _safe_target(text):
            raise ModelError(
                f"model file {name!r} is refused: a graph node calls {text[:40]!r}, which is "
                "not an operator (torch.ops.*); segpipe loads only graphs of operators: "
                "export the model with segpipe.models.export_program"
            )
        if key == "expr_str" and not _safe_expression(text):
            raise ModelError(
                f"model file {name!r} is refused: its shape expression {text[:40]!r} is not "
                "plain arithmetic, and torch would evaluate it as Python; export the model "
                "with segpipe.models.export_program"
            )


def _safe_target(target: str) -> bool:
    """Whether a node target names an operator torch resolves without reaching Python code."""
    if target.startswith("#"):  # an extension operator: resolved by a registered handler only
        return "__" not in target
    op = _TORCH_OP.fullmatch(target)
    if op:
        return "__" not in target.replace(op["op"], "", 1) and (
            "__" not in op["op"] or op["op"] in _DUNDER_OPS
        )
    module, _, function = target.partition(".")
    if module == "_operator":
        return function in _OPERATOR_NAMES
    if module == "math":
        return function in _MATH_NAMES
    return bool(_SYM_FUNCTION.fullmatch(target))


def _safe_expression(text: str) -> bool:
    """Whether a sympy expression string names only arithmetic, symbols and numbers."""
    rest = _NUMBER.sub(" ", _QUOTED.sub(" ", text))
    if not _EXPRESSION_CHARS.fullmatch(rest):
        return False  # quotes, dots, brackets, backslashes...: not plain arithmetic
    return all(
        word in _SYMPY_NAMES
        or bool(_SYMBOL.fullmatch(word))
        or (word.startswith(_SYMPY_PREFIXES) and "__" not in word)
        for word in re.findall(_NAME, rest)
    )
