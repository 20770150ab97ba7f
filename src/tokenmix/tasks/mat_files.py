"""Reading the public `.mat` files of the FNO paper's datasets: MATLAB v5 with scipy, v7.3 (HDF5) with h5py.

MATLAB stores arrays column-major, so a v7.3 file read through HDF5 holds every array with its axes reversed;
`read_mat_arrays` undoes that, so both versions give the arrays in the shape MATLAB (and scipy) shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokenmix.errors import MixerInputError


def read_mat_arrays(path: str | Path, keys: tuple[str, ...], *, owner: str) -> dict[str, np.ndarray]:
    """The arrays `keys` of the `.mat` file at `path`, by name; a missing key raises `MixerInputError`."""
    path = Path(path)
    try:
        from scipy.io import loadmat

        data = loadmat(path, variable_names=keys)
        arrays = {key: data[key] for key in keys if key in data}
    except NotImplementedError:  # scipy: "Please use HDF reader for matlab v7.3 files"
        try:
            import h5py
        except ImportError as error:
            raise MixerInputError(f"{owner}: {path} is a MATLAB v7.3 (HDF5) file; install h5py to read it") from error
        with h5py.File(path, "r") as file:
            arrays = {key: np.transpose(file[key][()]) for key in keys if key in file}
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise MixerInputError(f"{owner}: {path} has no variable(s) {', '.join(missing)}")
    return arrays
