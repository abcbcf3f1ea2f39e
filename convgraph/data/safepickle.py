"""A restricted unpickler for data files: it builds numpy arrays and plain containers, nothing else.

Unpickling an untrusted file with :mod:`pickle` can run any callable the file names (a pickle that
"reduces" to ``os.system`` runs a shell command). CIFAR-10's python version is a set of pickles,
so they are read through :class:`SafeUnpickler`, whose ``find_class`` hands out only the handful of
globals those files (and pickles of numpy arrays written by current numpy) refer to. Any other
global -- ``os.system``, ``builtins.eval``, ``subprocess.Popen`` -- raises DataError before it is
looked up, so it can never be called.
"""

from __future__ import annotations

import codecs
import io
import math
import pickle

import numpy as np

from convgraph.errors import DataError


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, limited to latin-1."""
    # A general codec call is not needed by any data file; only the latin-1 form pickle emits.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1", errors)


def _numpy_core(module: str):
    """numpy's core module by its new (numpy>=2: numpy._core) or old (numpy.core) name."""
    core = getattr(np, "_core", None) or np.core
    return getattr(core, module)


# (module, name) -> the object handed to the unpickler. Older numpy wrote "numpy.core.*", numpy 2
# writes "numpy._core.*", Python 2 pickles (the original CIFAR files) say "__builtin__". The ones
# that can make something bigger than the pickle itself -- an array of a given shape, bytes(n),
# a dtype with a sub-array -- are replaced, per load, by versions that charge a budget first
# (see _Budget); these are the rest.
_ALLOWED = {}
for _module in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_module}.numeric", "_frombuffer")] = _numpy_core("numeric")._frombuffer
for _builtins in ("builtins", "__builtin__"):
    for _type in (str, int, float, bool, complex):
        _ALLOWED[(_builtins, _type.__name__)] = _type
_ALLOWED[("_codecs", "encode")] = _latin1_encode

_BUDGETED = {("numpy", "ndarray"), ("numpy", "dtype")}
for _module in ("numpy.core", "numpy._core"):
    _BUDGETED |= {(f"{_module}.multiarray", "_reconstruct"), (f"{_module}.multiarray", "scalar")}
for _builtins in ("builtins", "__builtin__"):
    _BUDGETED |= {(_builtins, name) for name in ("bytes", "bytearray", "list", "tuple", "set",
                                                 "frozenset", "dict")}
_CONTAINER_ITEM = 64  # bytes charged per element of a container built from an iterable


class _Refused(Exception):
    """A global outside the allow-list: carries its name out of the unpickler."""


class _TooLarge(Exception):
    """An object the pickle asks for that is bigger than a file of its size can justify."""


class _Budget:
    """The bytes one pickle may make its arrays, bytes and containers hold, all together: a
    small multiple of its own size. A pickle stores an array's data in itself, so a real one
    never comes near; a hostile one that asks for (10**10,) labels from 1 KB is refused before
    anything of that size is allocated."""

    def __init__(self, size: int):
        self.limit = 8 * size + (16 << 20)
        self.used = 0

    def take(self, nbytes: int, what: str) -> None:
        self.used += nbytes
        if nbytes < 0 or self.used > self.limit:
            raise _TooLarge(f"{what} ({nbytes:,} bytes), more than the {self.limit:,} bytes a "
                            "pickle of its size may hold")

    def array(self, shape, dtype, what: str) -> tuple[tuple[int, ...], np.dtype]:
        """Charge an array of ``shape`` x ``dtype``; both checked to be what numpy takes."""
        if isinstance(shape, int):
            shape = (shape,)
        if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
            raise pickle.UnpicklingError(f"{what}: shape {str(shape)[:60]} is not a tuple of "
                                         "sizes")
        dtype = np.dtype(dtype)
        self.take(math.prod(shape) * dtype.itemsize,
                  f"an array of shape {shape} of {dtype}")
        return shape, dtype


class _Guarded(np.ndarray):
    """An array made while unpickling: its ``__setstate__`` (the BUILD opcode, which gives it its
    real shape and data) charges the budget before numpy allocates for the shape it names."""

    def __setstate__(self, state):
        budget = self.__dict__.get("_budget")
        if budget is None or not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("an array's state is not numpy's")
        shape, dtype = state[-4], state[-3]
        budget.array(shape, dtype, "an array's state")
        super().__setstate__(state)


def _budgeted(budget: _Budget) -> dict:
    """The globals in _BUDGETED, as versions that charge ``budget`` first."""

    class ndarray:  # stands in for numpy.ndarray, the name pickles refer to
        def __new__(cls, shape, dtype=float, *args, **kwargs):
            shape, dtype = budget.array(shape, dtype, "numpy.ndarray")
            if args or kwargs:
                raise pickle.UnpicklingError("numpy.ndarray is called only with a shape and "
                                             "a dtype here")
            return _made(np.ndarray.__new__(_Guarded, shape, dtype))

    def _made(array):
        array.__dict__["_budget"] = budget
        return array

    def reconstruct(subtype, shape, dtype):
        if subtype is not ndarray:
            raise pickle.UnpicklingError("_reconstruct is used only for numpy.ndarray")
        shape, dtype = budget.array(shape, dtype, "_reconstruct")
        return _made(np.ndarray.__new__(_Guarded, shape, dtype))

    def scalar(dtype, *args):
        dtype = np.dtype(dtype)
        budget.take(dtype.itemsize, f"a scalar of {dtype}")
        return _numpy_core("multiarray").scalar(dtype, *args)

    def dtype(*args, **kwargs):
        made = np.dtype(*args, **kwargs)
        if made.itemsize > budget.limit:
            raise _TooLarge(f"a dtype of {made.itemsize:,} bytes per item")
        return made

    def sized(kind):
        def make(*args):
            if args and isinstance(args[0], int):
                budget.take(int(args[0]), f"{kind.__name__}({args[0]})")
            elif args and kind in (bytes, bytearray) and isinstance(args[0], str):
                budget.take(4 * len(args[0]), f"{kind.__name__} of a string")
            elif args:
                try:
                    count = len(args[0])
                except TypeError:
                    raise pickle.UnpicklingError(f"{kind.__name__}() of an object without a "
                                                 "length") from None
                budget.take(count * _CONTAINER_ITEM, f"{kind.__name__} of {count:,} items")
            return kind(*args)
        return make

    made = {("numpy", "ndarray"): ndarray, ("numpy", "dtype"): dtype}
    for module in ("numpy.core", "numpy._core"):
        made[(f"{module}.multiarray", "_reconstruct")] = reconstruct
        made[(f"{module}.multiarray", "scalar")] = scalar
    for builtins in ("builtins", "__builtin__"):
        for kind in (bytes, bytearray, list, tuple, set, frozenset, dict):
            made[(builtins, kind.__name__)] = sized(kind)
    return made


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals in ``_ALLOWED`` and, charged against one
    budget per load, those in ``_BUDGETED``."""

    def __init__(self, file, *, budget: _Budget | None = None, **kwargs):
        super().__init__(file, **kwargs)
        self._globals = dict(_ALLOWED)
        self._globals.update(_budgeted(budget or _Budget(1 << 20)))

    def find_class(self, module, name):
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def _plain(value, depth: int = 0):
    """``value`` with the guarded arrays of its top levels viewed as plain numpy arrays."""
    if isinstance(value, _Guarded):
        return value.view(np.ndarray)
    if depth >= 4:
        return value
    if isinstance(value, dict):
        return {key: _plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item, depth + 1) for item in value)
    return value


def safe_load(data: bytes, path: str):
    """Unpickle ``data`` (the contents of ``path``) allowing only numpy arrays and containers,
    which together may hold no more than a small multiple of ``len(data)``.

    Python 2 strings are decoded as bytes, as the CIFAR-10 python files need.

    Raises
    ------
    DataError
        The file refers to any other global (it is refused before anything is called), asks
        for more than a file of its size can hold (refused before it is allocated), or is not a
        complete pickle.
    """
    try:
        unpickler = SafeUnpickler(io.BytesIO(data), encoding="bytes", budget=_Budget(len(data)))
        return _plain(unpickler.load())
    except _Refused as refused:
        raise DataError(
            f"{path} is a pickle that refers to {refused}, which a data file has no reason to "
            "use; it was refused without running it.",
            hint="only numpy arrays, lists, dicts, bytes, strings and numbers are read from "
            "pickles; re-create the file from the official data set.",
        ) from None
    except _TooLarge as large:
        raise DataError(
            f"{path} is a pickle of {len(data):,} bytes that asks for {large}; it is corrupt "
            "or hostile and was refused before allocating it.",
            hint="re-create the file from the official data set.",
        ) from None
    except Exception as why:  # any failure inside pickle means a bad file
        raise DataError(
            f"{path} is not a readable pickle ({type(why).__name__}: {why}); it may be "
            "truncated or corrupt.",
            hint="download the data set again.",
        ) from None
