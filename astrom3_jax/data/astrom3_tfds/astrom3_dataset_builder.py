"""astrom3: the AstroM3 multimodal variable-star data set (Rizhko & Bloom 2024).

Parses the raw release (Hugging Face Hub `AstroMLCore/AstroM3Dataset`, a local
copy, or a synthetic release), normalises every object once, and writes
array_record shards readable without TensorFlow via `as_data_source()`.
See README.md in this folder for the stored features.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from astrom3_jax.data import release_io, schema
from astrom3_jax.data.astrom3_tfds import objects

HUB_URL = "https://huggingface.co/datasets/AstroMLCore/AstroM3Dataset/resolve/main/"
REPORT_NAME = "bad_objects.json"

_MANUAL = """\
Put a copy of the Hub release (https://huggingface.co/datasets/AstroMLCore/AstroM3Dataset)
in the manual directory (`--manual_dir DIR`, or <data_dir>/downloads/manual/):
  DIR/photometry.zip                       (members vardb_files/<name>.dat)
  DIR/spectra/<CLASS>/<spec_filename>      (LAMOST FITS, .fits or .fits.gz)
  DIR/splits/<sub>/<seed>/{train,val,test}.csv and info.json
e.g. `huggingface-cli download AstroMLCore/AstroM3Dataset --repo-type dataset
--local-dir DIR`. Only the split folder of the chosen config is read.
"""


@dataclasses.dataclass(eq=False)
class Astrom3Config(tfds.core.BuilderConfig):
    """One split folder of a release: subset x seed, or a synthetic release."""

    subset: str = "full"
    split_seed: int = 42
    synthetic: str | None = None  # None (real data) or a generate_release preset
    synthetic_seed: int = 0


def _configs():
    out = [
        Astrom3Config(
            name=f"{sub}_{seed}",
            subset=sub,
            split_seed=seed,
            description=f"Real release, subset {sub}, split seed {seed}.",
        )
        for sub in schema.SUBSETS
        for seed in schema.SEEDS
    ]
    for preset in SYNTHETIC_PRESETS:
        # synthetic_<preset> is the full_42 split; every subset and seed of the
        # release also exists, named synthetic_<preset>_<subset>_<seed>.
        out.append(
            Astrom3Config(
                name=f"synthetic_{preset}",
                synthetic=preset,
                description=f"Synthetic release (preset {preset!r}), split full_42, "
                "with ground truth (true_target, subtype) and an `unseen` split.",
            )
        )
        out += [
            Astrom3Config(
                name=f"synthetic_{preset}_{sub}_{seed}",
                synthetic=preset,
                subset=sub,
                split_seed=seed,
                description=f"Synthetic release (preset {preset!r}), subset {sub}, "
                f"split seed {seed}, with ground truth and an `unseen` split.",
            )
            for sub in schema.SUBSETS
            for seed in schema.SEEDS
        ]
    return out


SYNTHETIC_PRESETS = ("small", "full")


def _config(name: str) -> Astrom3Config:
    for c in Builder.BUILDER_CONFIGS:
        if c.name == name:
            return c
    raise ValueError(f"unknown astrom3 config {name!r}")


def is_synthetic(name: str) -> bool:
    return _config(name).synthetic is not None


def release_of(name: str) -> str:
    """Which raw release a config reads: 'hub' or 'synthetic_<preset>'.

    Two configs of one release and one split seed share their test objects'
    complement: pre-training on one and testing on the other is leak-free.
    """
    c = _config(name)
    return "hub" if c.synthetic is None else f"synthetic_{c.synthetic}"


def split_seed_of(name: str) -> int:
    return _config(name).split_seed


def subset_of(name: str) -> str:
    return _config(name).subset


def model_input_features() -> dict:
    """The stored features the input pipeline reads (the public schema).

    Shared with toy builders in tests and benchmarks, so they cannot drift
    from what this builder writes.
    """
    f = tfds.features
    return {
        "id": f.Text(doc="Gaia EDR3 id"),
        "name": f.Text(doc="ASAS-SN name"),
        "photometry": f.Tensor(shape=(None, 3), dtype=np.float32),
        "photometry_aux": f.Tensor(shape=(6,), dtype=np.float32),
        "spectra": f.Tensor(shape=(3, schema.SPECTRUM_LENGTH), dtype=np.float32),
        "metadata": f.Tensor(shape=(len(schema.META_COLS),), dtype=np.float32),
        "label": f.ClassLabel(names=list(schema.CLASSES)),
    }


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for the AstroM3 release and its synthetic twin."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "full_42"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL

    def __init__(self, *, skip_bad: bool = False, num_workers: int | None = None, **kw):
        """skip_bad: skip (and count in bad_objects.json) objects whose files are
        missing or invalid, instead of stopping at the first one.
        num_workers: worker processes for parsing (default: CPU count, max 8)."""
        self._skip_bad = skip_bad
        self._num_workers = num_workers
        self._bad: dict[str, list] = {}
        self._counts: dict[str, int] = {}
        super().__init__(**kw)

    # ---------------------------------------------------------------- schema
    def _info(self) -> tfds.core.DatasetInfo:
        f = tfds.features
        feats = {
            **model_input_features(),
            "spec_filename": f.Text(doc="LAMOST file name"),
            # float64 kept exactly: default Tensor encoding would round to float32.
            "raw_catalogue": f.Tensor(
                shape=(len(schema.ALL_COLS),),
                dtype=np.float64,
                encoding=f.Encoding.BYTES,
            ),
        }
        feats.update(
            {
                k: f.Tensor(shape=(), dtype=np.float64, encoding=f.Encoding.BYTES)
                for k in schema.RAW_SCALARS
            }
        )
        if self.builder_config.synthetic:
            feats.update({c: f.Text() for c in schema.TRUTH_COLS})
        return self.dataset_info_from_configs(
            features=f.FeaturesDict(feats),
            homepage="https://github.com/MeriDK/AstroM3",
            license="CC BY 4.0",
        )

    # --------------------------------------------------------------- sources
    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        if cfg.synthetic:
            files = self._synthetic_release(dl_manager)
        else:
            files = self._local_release(dl_manager) or self._hub_release(dl_manager)
        return {
            split: self._generate_examples(split, files) for split in files.split_csvs
        }

    def _split_names(self) -> Mapping[str, str]:
        if self.builder_config.synthetic:
            return schema.SYNTHETIC_SPLIT_FILES
        return schema.SPLIT_FILES

    def _folder_files(self, root) -> objects.ReleaseFiles:
        cfg = self.builder_config
        folder = release_io.split_folder(root, cfg.subset, cfg.split_seed)
        csvs = {
            split: os.path.join(folder, f"{stem}.csv")
            for split, stem in self._split_names().items()
        }
        if "unseen" in csvs and not os.path.exists(csvs["unseen"]):
            del csvs["unseen"]
        return objects.ReleaseFiles(
            photometry_zip=os.path.join(root, "photometry.zip"),
            info_json=os.path.join(folder, "info.json"),
            split_csvs=csvs,
            spectra_root=os.path.join(root, "spectra"),
        )

    def _local_release(self, dl_manager):
        try:
            root = os.fspath(dl_manager.manual_dir)
        except (AssertionError, ValueError):
            return None  # no manual dir given (or empty): download instead
        files = self._folder_files(root)
        needed = [files.photometry_zip, files.info_json, *files.split_csvs.values()]
        missing = [p for p in needed if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(
                f"manual_dir {root} is incomplete; missing: {', '.join(missing)}\n"
                + _MANUAL
            )
        return files

    def _hub_release(self, dl_manager):
        cfg = self.builder_config
        split_dir = f"splits/{cfg.subset}/{cfg.split_seed}/"
        urls = {"photometry_zip": HUB_URL + "photometry.zip"}
        urls["info_json"] = HUB_URL + split_dir + "info.json"
        for split, stem in schema.SPLIT_FILES.items():
            urls[split] = HUB_URL + split_dir + f"{stem}.csv"
        try:
            paths = dl_manager.download(urls)
            spectra = {}
            for split in schema.SPLIT_FILES:
                for row in release_io.read_split_csv(paths[split], numeric_cols=()):
                    key = (row["target"], row["spec_filename"])
                    spectra[key] = f"{HUB_URL}spectra/{key[0]}/{key[1]}"
            keys = sorted(spectra)
            got = dl_manager.download([spectra[k] for k in keys])
        except release_io.ReleaseError:
            raise
        except Exception as e:
            raise RuntimeError(
                f"Could not download the AstroM3 release from {HUB_URL} "
                f"({type(e).__name__}: {e}).\nWithout internet, download it elsewhere "
                "and pass it as manual_dir:\n" + _MANUAL
            ) from e
        return objects.ReleaseFiles(
            photometry_zip=os.fspath(paths["photometry_zip"]),
            info_json=os.fspath(paths["info_json"]),
            split_csvs={s: os.fspath(paths[s]) for s in schema.SPLIT_FILES},
            spectra_paths={k: os.fspath(p) for k, p in zip(keys, got, strict=True)},
        )

    def _synthetic_release(self, dl_manager):
        from astrom3_jax.data import synthetic  # lazy: heavy

        cfg = self.builder_config
        # The generator version is in the folder name: a release cached by an
        # older generator is never silently reused.
        root = os.path.join(
            os.fspath(dl_manager.download_dir),
            f"synthetic_{cfg.synthetic}_seed{cfg.synthetic_seed}"
            f"_v{synthetic.GENERATOR_VERSION}",
        )
        done = os.path.join(root, ".complete")
        if not os.path.exists(done):
            synthetic.generate_release(
                root, preset=cfg.synthetic, seed=cfg.synthetic_seed
            )
            with open(done, "w") as f:
                f.write("ok\n")
        return self._folder_files(root)

    # -------------------------------------------------------------- examples
    def _generate_examples(self, split: str, files: objects.ReleaseFiles):
        csv_path = files.split_csvs[split]
        info = release_io.read_info(files.info_json)
        text = schema.ID_COLS + (
            schema.TRUTH_COLS if self.builder_config.synthetic else ()
        )
        rows = release_io.read_split_csv(csv_path, schema.ALL_COLS, text)
        _check_unique(rows, csv_path)
        extra = schema.TRUTH_COLS if self.builder_config.synthetic else ()
        ctx = objects.Context(
            files=files, info=info, csv_path=csv_path, extra_text=extra
        )
        workers = self._num_workers
        if workers is None:
            workers = min(os.cpu_count() or 1, 8) if len(rows) > 256 else 0
        bad = self._bad.setdefault(split, [])
        done = 0
        bar = tqdm(total=len(rows), desc=f"astrom3/{self.builder_config.name} {split}")
        with bar:
            for row, example, error in objects.process_rows(rows, ctx, workers):
                bar.update()
                if error is None:
                    done += 1
                    yield row["name"], example
                elif self._skip_bad:
                    bad.append(
                        {
                            "name": row.get("name"),
                            "id": row.get("id"),
                            "file": error.file,
                            "problem": error.problem,
                        }
                    )
                else:
                    raise release_io.ReleaseError(
                        f"{error.problem} (split {split}; rerun with skip_bad=True / "
                        "--skip_bad to skip such objects and list them in "
                        f"{REPORT_NAME})",
                        file=error.file,
                        obj=error.obj,
                    )
        self._counts[split] = done

    def _download_and_prepare(self, dl_manager, download_config=None):
        out = super()._download_and_prepare(
            dl_manager=dl_manager, download_config=download_config
        )
        report = {
            "config": self.builder_config.name,
            "skip_bad": self._skip_bad,
            "written": self._counts,
            "skipped": {s: len(v) for s, v in self._bad.items()},
            "bad_objects": self._bad,
        }
        with open(os.path.join(self.data_dir, REPORT_NAME), "w") as f:
            json.dump(report, f, indent=2)
        return out


def _check_unique(rows, csv_path):
    seen = set()
    for row in rows:
        if row["name"] in seen:
            raise release_io.ReleaseError(
                "object listed twice in the split", file=csv_path, obj=row["name"]
            )
        seen.add(row["name"])
