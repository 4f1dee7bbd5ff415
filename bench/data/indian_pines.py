"""Indian Pines (AVIRIS, 145×145 pixels, 200 corrected bands, 16 labelled classes) as patches around
labelled pixels.

Split: per class 20 % train / 10 % validation / 70 % test (at least one pixel of each class in every
split). 20 % is enough for a small spectral-spatial CNN to pass 85 % overall accuracy in a few CPU
minutes while leaving a large test set; 10 % validation gives every class (smallest: 20 pixels)
at least two pixels for threshold tuning. Caveat shared by all random pixel splits of this scene:
patches of train and test pixels overlap spatially, which flatters accuracy compared to a spatially
disjoint split. `split: blocks` gives one (bench/data/splits.py block_split): whole blocks of the scene go
to train/val/test and pixels whose patch would reach another split's blocks are dropped; small single-field
classes (Alfalfa, Grass-pasture-mowed, Oats) then cannot be in every split (manifest extra.split.missing).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench.data.base import DatasetSpec, PreparedSplits, register_dataset
from bench.data.sources import download, sha256_file, verify_array
from bench.data.splits import block_split, stratified_split
from bench.errors import BenchError
from bench.io import load_npy

CUBE_SHA256 = "00fa74d610fcbaac008e9ed9d0a590031c982828de74de0ed20ab3db32b4ad98"  # uint16 (145, 145, 200)
GT_SHA256 = "0fb397a6c89ad43ad3e15b60972d40821effb01eaedce548d8509ca535a2057c"  # uint8 (145, 145)
MAT_FILES = {"cube": ("Indian_pines_corrected.mat", "indian_pines_corrected"), "gt": ("Indian_pines_gt.mat", "indian_pines_gt")}
GIC_URLS = {"cube": "http://www.ehu.eus/ccwintco/uploads/6/67/Indian_pines_corrected.mat",
            "gt": "http://www.ehu.eus/ccwintco/uploads/c/c4/Indian_pines_gt.mat"}
DOWNLOAD_DIR = Path("datasets/_downloads/indian_pines")
PREPARE_DEFAULTS = {"source": "tensorly", "patch_size": 7, "train_fraction": 0.2, "val_fraction": 0.1,
                    "split_seed": 0, "subset": None, "split": "random", "block_size": 16}
GIC_FOLDER = ("set prepare.indian_pines.source to a folder with the GIC files Indian_pines_corrected.mat and "
              "Indian_pines_gt.mat")
HOW_TO_GET = f"install the `tensorly` package (it ships the arrays), or {GIC_FOLDER}"


def load_tensorly() -> tuple[np.ndarray, np.ndarray, dict]:
    try:
        import tensorly
    except ImportError:
        raise BenchError(f"Indian Pines source 'tensorly' is not installed; {HOW_TO_GET}") from None
    folder = Path(tensorly.__file__).parent / "datasets" / "data"
    paths = {"cube": folder / "Indian_pines_corrected.npy", "gt": folder / "Indian_pines_gt.npy"}
    for path in paths.values():
        if not path.is_file():
            raise BenchError(f"missing data file {path}; {HOW_TO_GET}")
    fix = f"reinstall tensorly (pip install --force-reinstall tensorly), or {GIC_FOLDER}"
    return (load_npy(paths["cube"], fix), load_npy(paths["gt"], fix),
            {p.name: sha256_file(p) for p in paths.values()})


def load_mat(folder: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    from scipy.io import loadmat

    arrays = {}
    for key, (name, mat_key) in MAT_FILES.items():
        path = folder / name
        if not path.is_file():
            raise BenchError(f"missing data file {path}; {HOW_TO_GET}")
        try:
            arrays[key] = loadmat(path)[mat_key]
        except Exception as exc:  # scipy raises several types on damaged files
            raise BenchError(f"corrupt data file {path} ({exc.__class__.__name__}); {HOW_TO_GET}") from None
    return arrays["cube"], arrays["gt"], {name: sha256_file(folder / name) for name, _ in MAT_FILES.values()}


def load_source(source: str) -> tuple[np.ndarray, np.ndarray, dict]:
    if source == "tensorly":
        return load_tensorly()
    if source == "download":
        for key, url in GIC_URLS.items():
            if not (DOWNLOAD_DIR / MAT_FILES[key][0]).is_file():
                download(url, DOWNLOAD_DIR / MAT_FILES[key][0], None, HOW_TO_GET)  # verified by content below
        return load_mat(DOWNLOAD_DIR)
    return load_mat(Path(os.path.expanduser(source)))


def prepare(params: dict) -> PreparedSplits:
    params = {**PREPARE_DEFAULTS, **params}  # a section from before `split` existed means the random split
    cube, gt, files = load_source(params["source"])
    verify_array(cube, CUBE_SHA256, f"Indian Pines cube ({params['source']})", HOW_TO_GET)
    verify_array(gt, GT_SHA256, f"Indian Pines ground truth ({params['source']})", HOW_TO_GET)
    rows, cols = np.nonzero(gt)
    labels = gt[rows, cols].astype(np.int64) - 1
    fractions = {"train": params["train_fraction"], "val": params["val_fraction"]}
    split_info: dict = {"kind": params["split"]}
    if params["split"] == "blocks":
        scene = gt.astype(np.int64) - 1  # -1: unlabelled
        split, details = block_split(scene, fractions, params["split_seed"], "test", params["patch_size"] // 2,
                                     params["block_size"])
        split_info.update(details)
        keep = np.sort(np.concatenate(list(split.values())))  # pixels in a guard band belong to no split
        rows, cols, labels = rows[keep], cols[keep], labels[keep]
        split = {s: np.searchsorted(keep, idx) for s, idx in split.items()}
    else:
        split = stratified_split(labels, fractions, params["split_seed"], rest="test")
    spectra = cube.reshape(-1, cube.shape[-1]).astype(np.float64)
    train_pixels = spectra[rows[split["train"]] * gt.shape[1] + cols[split["train"]]]
    mean, std = train_pixels.mean(0), train_pixels.std(0) + 1e-8  # fitted on training pixels only
    standardised = ((cube - mean) / std).astype(np.float32).transpose(2, 0, 1)  # bands, H, W
    centres = np.stack([rows, cols], 1)
    return PreparedSplits(
        kind="patches",
        arrays={s: centres[split[s]] for s in split},
        labels={s: labels[split[s]] for s in split},
        extra={"patch_size": params["patch_size"], "band_mean": mean.tolist(), "band_std": std.tolist(),
               "split": split_info},
        sources={"source": params["source"], "files": files, "cube_content_sha256": CUBE_SHA256,
                 "gt_content_sha256": GT_SHA256},
        notes=("per-class stratified train/val/test on labelled pixels" if params["split"] == "random" else
               f"spatially disjoint {params['block_size']}-pixel blocks with a {2 * (params['patch_size'] // 2)}-pixel "
               f"guard band between splits; classes missing from a split: {split_info.get('missing')}")
        + "; bands standardised with training-pixel "
              "statistics; reflect padding at the scene border",
        shared={"cube": standardised},
    )


register_dataset(DatasetSpec(
    name="indian_pines",
    num_classes=16,
    prepare=prepare,
    prepare_defaults=PREPARE_DEFAULTS,
    augment="dihedral",
    input_shape=lambda prepare: (200, prepare["patch_size"], prepare["patch_size"]),  # 200 corrected bands
))
