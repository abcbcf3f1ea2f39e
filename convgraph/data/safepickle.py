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
# writes "numpy._core.*", Python 2 pickles (the original CIFAR files) say "__builtin__".
_ALLOWED = {}
for _module in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_module}.multiarray", "_reconstruct")] = _numpy_core("multiarray")._reconstruct
    _ALLOWED[(f"{_module}.multiarray", "scalar")] = _numpy_core("multiarray").scalar
    _ALLOWED[(f"{_module}.numeric", "_frombuffer")] = _numpy_core("numeric")._frombuffer
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype
for _builtins in ("builtins", "__builtin__"):
    for _type in (dict, list, tuple, set, frozenset, bytes, bytearray, str, int, float, bool,
                  complex):
        _ALLOWED[(_builtins, _type.__name__)] = _type
_ALLOWED[("_codecs", "encode")] = _latin1_encode


class _Refused(Exception):
    """A global outside the allow-list: carries its name out of the unpickler."""


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals in ``_ALLOWED``."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def safe_load(data: bytes, path: str):
    """Unpickle ``data`` (the contents of ``path``) allowing only numpy arrays and containers.

    Python 2 strings are decoded as bytes, as the CIFAR-10 python files need.

    Raises
    ------
    DataError
        The file refers to any other global (it is refused before anything is called), or it is
        not a complete pickle.
    """
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as refused:
        raise DataError(
            f"{path} is a pickle that refers to {refused}, which a data file has no reason to "
            "use; it was refused without running it.",
            hint="only numpy arrays, lists, dicts, bytes, strings and numbers are read from "
            "pickles; re-create the file from the official data set.",
        ) from None
    except Exception as why:  # any failure inside pickle means a bad file
        raise DataError(
            f"{path} is not a readable pickle ({type(why).__name__}: {why}); it may be "
            "truncated or corrupt.",
            hint="download the data set again.",
        ) from None
