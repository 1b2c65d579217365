"""Architectures from the user's own Python file: ``model.name: nets.py:mnist_8k``.

The file is ordinary Python and runs when a model is built from it (weights and configs never run code; an
own-model file does, which is why kagglecv names the file and its sha256 whenever it runs one). A model it
registers with timm's registry (``@timm.models.register_model``) is built by ``timm.create_model``, the same path as
any timm model. A plain ``nn.Module`` subclass or factory function works too: it is called with the keyword
arguments it accepts among ``num_classes``, ``in_chans`` and ``drop_rate``; one that takes no ``num_classes`` gets its
last ``nn.Linear`` replaced by one with the task's number of outputs.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from types import ModuleType

import timm
from torch import nn

from kagglecv.core.config import OwnModelName
from kagglecv.core.errors import ConfigError
from kagglecv.core.files import sha256_file

_LOADED: dict[str, ModuleType] = {}


def load_own_module(path: Path) -> ModuleType:
    """Run the file once per content (by sha256) and return it as a module; its ``register_model`` calls register
    its models with timm. Errors name the file, and the line for a syntax error."""
    if not path.is_file():
        raise ConfigError(f"model.name: own-model file not found: {path}")
    digest = sha256_file(path)
    if digest in _LOADED:
        return _LOADED[digest]
    # Printed, not warned: no interpreter setting (PYTHONWARNINGS=ignore, -W) may hide that code is running.
    print(f"notice: running model code {path} (sha256 {digest[:16]})", file=sys.stderr, flush=True)
    module_name = f"kagglecv_own_models.m{digest[:16]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    before = set(timm.list_models())
    sys.modules[module_name] = module  # timm's register_model looks the module up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise ConfigError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # the user's code may raise anything; all of it means the file cannot be used
        del sys.modules[module_name]
        line = next((frame.lineno for frame in reversed(traceback.extract_tb(exc.__traceback__))
                     if Path(frame.filename).resolve() == path.resolve()), "?")
        raise ConfigError(f"{path}:{line}: running the file failed: {type(exc).__name__}: {exc}") from None
    module.__kagglecv_registered__ = sorted(set(timm.list_models()) - before) or [
        name for name in getattr(module, "__all__", []) if timm.is_model(name)]
    _LOADED[digest] = module
    return module


def build_own_model(own: OwnModelName, code_file: Path | None, num_outputs: int, **kwargs) -> nn.Module:
    """The model ``own.name`` of ``code_file`` (a run folder's copy) or of ``own.file``, with ``num_outputs`` logits."""
    path = code_file or own.file
    module = load_own_module(path)
    if own.name in module.__kagglecv_registered__:
        return timm.create_model(own.name, pretrained=False, num_classes=num_outputs, **kwargs)
    factory = getattr(module, own.name, None)
    if not callable(factory):
        callables = sorted(name for name, value in vars(module).items()
                           if _is_model_factory(value, module) and name not in module.__kagglecv_registered__)
        raise ConfigError(f"{path} defines no model {own.name!r}; it registers "
                          f"{', '.join(module.__kagglecv_registered__) or 'none'}, and defines "
                          f"{', '.join(callables) or 'no other model classes or functions'}")
    return _call_plain(factory, num_outputs, kwargs, path)


def _call_plain(factory, num_outputs: int, kwargs: dict, path: Path) -> nn.Module:
    accepted = _keyword_names(factory)
    offered = {"num_classes": num_outputs, **{k: v for k, v in kwargs.items() if k in ("in_chans", "drop_rate")}}
    model = factory(**{key: value for key, value in offered.items() if key in accepted})
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{path}: {getattr(factory, '__name__', factory)!r} returned {type(model).__name__}, "
                          "not a torch nn.Module")
    if "num_classes" not in accepted:
        replace_last_linear(model, num_outputs, path)
    return model


def _keyword_names(factory) -> set[str]:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return {"num_classes", "in_chans", "drop_rate"}
    return {p.name for p in parameters}


def last_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The name and module of the model's last ``nn.Linear``: a plain module's classifier."""
    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return linears[-1] if linears else None


def replace_last_linear(model: nn.Module, num_outputs: int, path: Path) -> None:
    """Swap the model's last ``nn.Linear`` for one with ``num_outputs`` outputs (same inputs, fresh weights)."""
    found = last_linear(model)
    if found is None:
        raise ConfigError(f"{path}: the model takes no num_classes argument and has no nn.Linear to resize; "
                          "accept num_classes, or end with an nn.Linear")
    name, last = found
    if last.out_features == num_outputs:
        return
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    setattr(parent, name.rsplit(".", 1)[-1], nn.Linear(last.in_features, num_outputs, bias=last.bias is not None))


def _is_model_factory(value, module: ModuleType) -> bool:
    if inspect.isclass(value):
        return issubclass(value, nn.Module) and value.__module__ == module.__name__
    return inspect.isfunction(value) and value.__module__ == module.__name__
