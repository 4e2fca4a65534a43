"""The AstroM3 release from the Hugging Face Hub, as a folder to build from.

`download(subset, seed)` fetches what one config reads into the shared
Hugging Face cache and returns a folder the builder reads exactly as it
reads `--manual_dir`.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib

from absl import logging
from tqdm import tqdm

from astrom3_jax import errors
from astrom3_jax.data import hub, release_io, schema

REPO_ID = "AstroMLCore/AstroM3Dataset"
REPO_TYPE = "dataset"
PHOTOMETRY_ZIP = "photometry.zip"
WORKERS = 8  # parallel spectrum downloads


class ReleaseDownloadError(errors.UserError, ConnectionError):
    """The release could not be fetched (or found in the cache)."""


def split_dir(subset: str, seed: int) -> str:
    return f"splits/{subset}/{seed}"


def spectrum_paths(root, subset: str, seed: int) -> list[str]:
    """Repository paths of the spectra that a split folder's CSVs list."""
    folder = pathlib.Path(root) / split_dir(subset, seed)
    paths = set()
    for stem in schema.SPLIT_FILES.values():
        csv = folder / f"{stem}.csv"
        if not csv.exists():
            raise ReleaseDownloadError(
                f"{hub.repo_url(REPO_ID, REPO_TYPE)} has no "
                f"{split_dir(subset, seed)}/{stem}.csv"
            )
        for row in release_io.read_split_csv(str(csv), numeric_cols=()):
            paths.add(f"spectra/{row['target']}/{row['spec_filename']}")
    return sorted(paths)


def download(subset: str, seed: int, *, cache_dir=None) -> pathlib.Path:
    """The snapshot folder holding what config (subset, seed) reads.

    Fetches only what that config reads, through huggingface_hub
    (astrom3_jax/data/hub.py), into the shared Hugging Face cache: first
    `photometry.zip` and the config's split folder (one snapshot, which fixes
    the commit), then the spectra that folder's CSVs list, at that commit,
    eight at a time. Files already in the cache cost no request, so an
    interrupted download goes on where it stopped. The folder returned has
    the layout of a manual directory.

    Offline (`HF_HUB_OFFLINE=1`, or no TCP connection to the Hub within 5 s)
    a release already in the cache is used; otherwise `ReleaseDownloadError`
    comes at once.
    """
    offline = hub.offline_reason()
    where = hub.repo_url(REPO_ID, REPO_TYPE)
    try:
        root = hub.snapshot(
            REPO_ID,
            [PHOTOMETRY_ZIP, f"{split_dir(subset, seed)}/*"],
            repo_type=REPO_TYPE,
            cache_dir=cache_dir,
            offline=offline,
        )
    except hub.HubOfflineError as e:
        raise ReleaseDownloadError(
            f"Cannot reach the Hugging Face Hub to download the AstroM3 release "
            f"({offline}), and the Hugging Face cache ({cache_folder(cache_dir)}) "
            f"does not hold {PHOTOMETRY_ZIP} and {split_dir(subset, seed)}/ of "
            f"{REPO_ID}"
        ) from e
    except (hub.HubError, hub.HubNotFoundError, hub.HubAccessError) as e:
        raise ReleaseDownloadError(
            f"Could not download the AstroM3 release from {where}: {e}"
        ) from e
    commit = root.name  # .../snapshots/<commit hash>
    needed = spectrum_paths(root, subset, seed)
    missing = [p for p in needed if not (root / p).exists()]
    if missing and offline is not None:
        raise ReleaseDownloadError(
            f"Cannot reach the Hugging Face Hub to download the AstroM3 release "
            f"({offline}), and the Hugging Face cache lacks {len(missing)} of the "
            f"{len(needed)} spectra that {split_dir(subset, seed)} lists "
            f"(e.g. {missing[0]})"
        )
    absent = _fetch_spectra(missing, commit, cache_dir)
    if absent:
        logging.warning(
            "%d spectra listed in %s are not in %s (e.g. %s); their objects "
            "count as bad objects.",
            len(absent),
            split_dir(subset, seed),
            REPO_ID,
            absent[0],
        )
    return root


def _fetch_spectra(paths, commit, cache_dir) -> list[str]:
    """Download `paths` at `commit`; returns those the Hub does not have."""
    if not paths:
        return []
    absent = []

    def one(path):
        try:
            hub.download(
                REPO_ID,
                path,
                repo_type=REPO_TYPE,
                revision=commit,
                cache_dir=cache_dir,
                offline=None,  # the Hub answered the snapshot just now
                quiet=True,
            )
        except hub.HubNotFoundError:
            absent.append(path)
        except (hub.HubError, hub.HubAccessError) as e:
            raise ReleaseDownloadError(
                f"Could not download the AstroM3 release from "
                f"{hub.repo_url(REPO_ID, REPO_TYPE)}: {e}"
            ) from e

    bar = tqdm(total=len(paths), unit="file", desc="AstroM3 spectra")
    pool = concurrent.futures.ThreadPoolExecutor(min(WORKERS, len(paths)))
    try:
        futures = [pool.submit(one, p) for p in paths]
        for future in concurrent.futures.as_completed(futures):
            future.result()  # the first failure ends the download
            bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return sorted(absent)


def cache_folder(cache_dir=None) -> str:
    """Where huggingface_hub keeps the release (for messages)."""
    from huggingface_hub import constants

    return os.fspath(cache_dir or constants.HF_HUB_CACHE)
