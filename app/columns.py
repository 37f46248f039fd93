"""The kinds of feature column, and how a categorical value reads as text.

Validation, profiles, the streamed scan and the models all need these; they
live apart from :mod:`app.models` so that reading and checking a batch (a Dask
worker scanning parts, say) never loads scikit-learn and SciPy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

NUMERIC = "numeric"
CATEGORICAL = "categorical"


def columns_of_kind(schema: dict[str, str], kind: str) -> list[str]:
    return [column for column, column_kind in schema.items() if column_kind == kind]


def category_text(value: Any) -> str:
    """A category value as text; integral floats lose their ".0".

    An integer column with missing values is read as float64, so the same
    code would otherwise be "1" in one batch and "1.0" in the next.
    """
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def category_texts(values: pd.Series | pa.ChunkedArray) -> pd.Series:
    """:func:`category_text` of every value, as an object column with NaN for missing.

    Each distinct value is converted once (a batch has few categories and
    many rows), then spread by its integer code. The codes come straight from
    a Categorical, from Arrow's dictionary encoding for Arrow-backed text (what
    ``to_pandas`` gives for a string column), or from ``pd.factorize``.
    ``values`` may also be an Arrow column, dictionary-encoded or not (as
    :func:`app.readers.read_table` gives categorical text); the result then
    has a RangeIndex.
    """
    from_arrow = isinstance(values, pa.ChunkedArray)
    if from_arrow or (isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow"):
        arrow = values if from_arrow else pa.array(values.array)
        encoded = arrow if pa.types.is_dictionary(arrow.type) else pc.dictionary_encode(arrow)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()  # one dictionary for every chunk
        codes, uniques = encoded.indices.fill_null(-1).to_numpy(), encoded.dictionary.to_pylist()  # missing -> -1
    elif isinstance(values.dtype, pd.CategoricalDtype):
        codes, uniques = values.cat.codes.to_numpy(), values.cat.categories  # missing -> -1
    else:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)  # missing -> -1
    texts = np.array([category_text(value) for value in uniques] + [np.nan], dtype=object)  # code -1 -> NaN
    index = pd.RangeIndex(len(values)) if from_arrow else values.index
    return pd.Series(texts[codes], index=index, dtype=object, copy=False)  # a new array: no copy needed
