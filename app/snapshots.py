"""Model snapshot files: skops format, verified by SHA-256, never pickle.

A snapshot file holds one fitted pipeline from :mod:`app.models`, written with
``skops.io.dumps``. Loading checks, in order: the file exists, its SHA-256 is
the one recorded when it was written, it is a skops archive, and every type in
it is trusted. Nothing in the file is executed before those checks pass, and
there is no pickle fallback.

Trusted types
-------------
skops trusts a default set of types on its own (scikit-learn estimators and
transformers, builtins, numpy arrays and scalars, ...). ``TRUSTED_TYPES`` lists
the few *extra* types driftdeck's pipelines contain beyond those defaults:

- ``numpy.dtype``: dtypes the fitted imputers and encoders remember;
- ``sklearn.tree._tree.Tree``: the trees of random forests;
- ``sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor``: the
  trees of histogram gradient boosting.

skops leaves the two tree types untrusted by default because a crafted file
can give them out-of-range node indices that crash ``predict``. driftdeck
trusts them only for files whose SHA-256 matches the digest it recorded when it
wrote them, so a file it did not write never reaches the loader.

The list was computed by fitting every pipeline in ``app.models.ESTIMATORS``
for both tasks on tiny data and collecting ``skops.io.get_untrusted_types``;
tests/test_snapshots.py repeats that and fails if the list stops covering a
registry pipeline. A program outside driftdeck that serves
``.driftdeck/serving/<model>.skops`` should check the file's SHA-256 against
the ``.json`` beside it and load with this same list::

    skops.io.loads(data, trusted=list(app.snapshots.TRUSTED_TYPES))
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

from app.fsutil import atomic_write_bytes, sha256_bytes

TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
)


class SnapshotError(Exception):
    """A snapshot file cannot be loaded; the message says which file and why."""


def write_model(model: Any, path: Path) -> str:
    """Write ``model`` to ``path`` in skops format, atomically; return the SHA-256 hex."""
    import skops.io  # imported when first needed: importing it imports all of scikit-learn (seconds)

    data = skops.io.dumps(model)
    atomic_write_bytes(Path(path), data)
    return sha256_bytes(data)


def read_model(
    path: Path,
    expected_sha256: str,
    warnings_out: list[str] | None = None,
) -> Any:
    """Load the model at ``path`` after checking it is the file that was written.

    Raises SnapshotError when the file is missing, its SHA-256 differs from
    ``expected_sha256``, it is not a skops file, or it holds untrusted types.
    Warnings raised while loading (e.g. the model was saved by another
    scikit-learn version) are not shown; their messages are appended to
    ``warnings_out`` when it is given.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SnapshotError(f"snapshot file missing: {path}") from None
    actual_sha256 = sha256_bytes(data)
    if actual_sha256 != expected_sha256:
        raise SnapshotError(
            f"snapshot {path} was modified after it was written "
            f"(sha256 {actual_sha256} != recorded {expected_sha256})"
        )
    return load_trusted(data, source=f"snapshot {path}", warnings_out=warnings_out)


def check_trusted(data: bytes, source: str = "data") -> None:
    """Raise SnapshotError, naming ``source`` and the types, when skops bytes ``data`` hold types
    outside skops' defaults and TRUSTED_TYPES (without building anything)."""
    import skops.io

    untrusted = sorted(set(skops.io.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    if untrusted:
        raise SnapshotError(f"{source} holds untrusted types, refused to load: {', '.join(untrusted)}")


def load_trusted(
    data: bytes,
    source: str = "data",
    warnings_out: list[str] | None = None,
) -> Any:
    """Build the object in skops bytes ``data``, trusting skops' defaults plus TRUSTED_TYPES.

    Raises SnapshotError, naming ``source``, when ``data`` is not a skops
    archive, holds types outside the trusted set, or fails to load. Warnings
    raised while loading are appended to ``warnings_out`` as in
    :func:`read_model`, each distinct message once (deprecation notices are
    dropped).
    """
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        try:
            model = skops.io.loads(data, trusted=list(TRUSTED_TYPES))
        except UntrustedTypesFoundException as error:
            check_trusted(data, source)
            raise SnapshotError(f"{source} holds untrusted types, refused to load") from error
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise SnapshotError(f"{source} is not a skops file ({error})") from error
        except Exception as error:
            # A well-formed archive can still fail to build (unsupported skops
            # protocol, damaged arrays); callers get one error type for "unusable".
            raise SnapshotError(
                f"{source} could not be loaded ({type(error).__name__}: {error})"
            ) from error
    if warnings_out is not None:
        messages = (str(warning.message) for warning in caught)
        warnings_out.extend(dict.fromkeys(messages))  # one line per distinct message
    return model
