"""astrom3: the AstroM3 multimodal variable-star data set (Rizhko & Bloom 2024).

Parses the raw release (Hugging Face Hub `AstroMLCore/AstroM3Dataset`, a local
copy, or a synthetic release), normalises every object once, and writes
array_record shards readable without TensorFlow via `as_data_source()`.
See README.md in this folder for the stored features.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from tqdm import tqdm

from astrom3_jax import errors
from astrom3_jax.data import (
    catalog,
    catalog_rows,
    catalog_splits,
    catalog_tables,
    normalisation,
    release_io,
    schema,
)
from astrom3_jax.data import workers as workers_lib
from astrom3_jax.data.astrom3_tfds import hub_release, objects, shuffle_buffer
from astrom3_jax.data.astrom3_tfds.features import (
    MANUAL,
    MANUAL_CATALOG,
    all_configs,
    modality_features,
    model_input_features,
    stored_modalities,
)

REPORT_NAME = "bad_objects.json"
# Written next to the version folder (<data_dir>/astrom3/<config>/) when a
# build fails: inside it, TFDS would take the folder for a prepared data set.
FAILED_REPORT_NAME = "bad_objects.failed.json"
DEFAULT_MAX_BAD_FRACTION = 0.05
# What TFDS's writer holds of a split's examples in memory before it sorts
# them through temporary files (shuffle_buffer.py): the same records, with a
# memory bound that does not grow with the split.
SHUFFLE_BUFFER_BYTES = 64 << 20


class BuildError(errors.UserError, RuntimeError):
    """The data set cannot be built, or reused, as asked."""


def allowed_bad(n_objects: int, max_bad_fraction: float) -> int:
    """How many of a split's n_objects may be skipped: floor(fraction * n)."""
    return math.floor(max_bad_fraction * n_objects + 1e-9)


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for the AstroM3 release and its synthetic twin."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = all_configs()
    DEFAULT_CONFIG_NAME = "full_42"
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL

    def __init__(
        self,
        *,
        skip_bad: bool = False,
        max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
        num_workers: int | None = None,
        **kw,
    ):
        """skip_bad: skip (and count in bad_objects.json) objects whose files are
        missing or invalid, instead of stopping at the first one.
        max_bad_fraction: with skip_bad, the build still fails when more than
        this fraction of a split's objects is bad (a broken release, not a few
        bad files).
        num_workers: worker processes for parsing (default:
        workers.default_workers of the split's number of objects)."""
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(
                f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}"
            )
        self._skip_bad = skip_bad
        self._max_bad_fraction = float(max_bad_fraction)
        self._num_workers = num_workers
        self._bad: dict[str, list] = {}
        self._counts: dict[str, int] = {}
        self._absent: dict[str, dict[str, int]] = {}
        self._final_data_dir: str | None = None
        # The training split's statistics, recorded next to the data.
        self._stats: normalisation.NormalisationStats | None = None
        # Set by download_and_prepare: Beam options given (beam_examples.py).
        self._beam = False
        self._n_rows: dict[str, int] = {}
        super().__init__(**kw)

    # ---------------------------------------------------------------- schema
    def _info(self) -> tfds.core.DatasetInfo:
        f = tfds.features
        optional = tuple(self.builder_config.optional_modalities)
        stored = stored_modalities(self.builder_config.catalog)
        feats = {
            **model_input_features(optional, stored),
            "spec_filename": f.Text(doc="LAMOST file name"),
            # float64 kept exactly: default Tensor encoding would round to float32.
            "raw_catalogue": f.Tensor(
                shape=(len(schema.ALL_COLS),),
                dtype=np.float64,
                encoding=f.Encoding.BYTES,
            ),
            **modality_features(stored, optional, builder_only=True),
        }
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
        if cfg.catalog:
            return self._catalog_splits(dl_manager)
        if cfg.synthetic:
            files = self._synthetic_release(dl_manager)
        else:
            files = self._local_release(dl_manager) or self._hub_release(dl_manager)
        _check_splits_disjoint(files.split_csvs)
        self._stats = normalisation.NormalisationStats.from_info_json(files.info_json)
        make = self._beam_release_examples if self._beam else self._generate_examples
        return {split: make(split, files) for split in files.split_csvs}

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
                + MANUAL
            )
        return files

    def _hub_release(self, dl_manager):
        """The config's files from the Hub, via the Hugging Face cache.

        hub_release.py downloads them (or finds them in the cache, offline)
        into a folder laid out as a manual directory, read the same way.
        """
        cfg = self.builder_config
        try:
            root = hub_release.download(cfg.subset, cfg.split_seed)
        except hub_release.ReleaseDownloadError as e:
            raise BuildError(
                f"{e}.\nWithout internet, download it elsewhere and pass it "
                "with --manual_dir DIR (manual_dir= in datasets.prepare()):\n" + MANUAL
            ) from e
        return self._folder_files(os.fspath(root))

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
    def _context(self, split: str, files: objects.ReleaseFiles) -> objects.Context:
        extra = schema.TRUTH_COLS if self.builder_config.synthetic else ()
        return objects.Context(
            files=files,
            info=release_io.read_info(files.info_json),
            csv_path=files.split_csvs[split],
            extra_text=extra,
            optional=tuple(self.builder_config.optional_modalities),
            derive_photometry=self.builder_config.derived_photometry,
        )

    def _generate_examples(self, split: str, files: objects.ReleaseFiles):
        ctx = self._context(split, files)
        csv_path = ctx.csv_path
        rows = release_io.read_split_csv(
            csv_path, schema.ALL_COLS, schema.ID_COLS + tuple(ctx.extra_text)
        )
        if not rows:
            raise release_io.ReleaseError("split CSV lists no objects", file=csv_path)
        optional = tuple(ctx.optional)
        absent = self._absent.setdefault(split, dict.fromkeys(optional, 0))
        workers = self._num_workers
        if workers is None:
            workers = workers_lib.default_workers(len(rows))
        bad = self._bad.setdefault(split, [])
        limit = allowed_bad(len(rows), self._max_bad_fraction) if self._skip_bad else 0
        self._counts[split] = 0
        bar = tqdm(total=len(rows), desc=f"astrom3/{self.builder_config.name} {split}")
        with bar:
            for row, example, error in objects.process_rows(rows, ctx, workers):
                bar.update()
                if error is None:
                    if len(bad) <= limit:  # past the limit: count, write nothing
                        self._counts[split] += 1
                        for m in optional:
                            field = objects.optional_fields(m)[0]
                            absent[m] += len(example[field]) == 0
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
        self._check_bad_count(split, len(rows), limit)

    def _beam_release_examples(self, split: str, files: objects.ReleaseFiles):
        """The split as a Beam transform (a build given Beam options)."""
        from astrom3_jax.data.astrom3_tfds import beam_examples  # needs apache-beam

        ctx = self._context(split, files)
        text = schema.ID_COLS + tuple(ctx.extra_text)
        self._n_rows[split] = len(release_io.read_split_csv(ctx.csv_path, (), text))
        return beam_examples.release_examples(
            ctx=ctx, split=split, text_cols=text, skip_bad=self._skip_bad,
            data_dir=os.fspath(self.data_dir),
        )  # fmt: skip

    # ------------------------------------------------------------- catalogue
    def _catalog_splits(self, dl_manager):
        """The `catalog` config: a user's table (astrom3_jax.data.catalog)."""
        try:
            root = os.fspath(dl_manager.manual_dir)
        except (AssertionError, ValueError):
            root = ""
        if not root or not os.path.isdir(root):
            raise BuildError(
                "the catalog config reads a table of your own stars from the "
                "manual directory; pass it with --manual_dir DIR (manual_dir= in "
                "datasets.prepare()).\n" + MANUAL_CATALOG
            )
        table = catalog_tables.find_catalog(root)
        cat = catalog_tables.read_catalog(table)
        splits = catalog_splits.assign_splits(cat, self.builder_config.split_seed)
        if self._beam:
            return self._beam_catalog_splits(table, splits)
        derive = self.builder_config.derived_photometry
        source = f"train split of {table}"
        # Measured once: the statistics and the train examples both use them.
        splits["train"] = catalog_splits.measure_rows(
            splits["train"], source, derive_photometry=derive,
            num_workers=self._num_workers,
        )  # fmt: skip
        self._stats = catalog_splits.stats_of_rows(
            splits["train"], source, derive_photometry=derive,
            num_workers=self._num_workers,
        )  # fmt: skip
        return {
            split: self._generate_catalog_examples(split, rows, table)
            for split, rows in splits.items()
        }

    def _beam_catalog_splits(self, table: str, splits):
        """Each split as a Beam transform; the statistics are a combine over
        the train rows, shared by the three (a build given Beam options)."""
        from astrom3_jax.data.astrom3_tfds import beam_examples  # needs apache-beam

        cfg = self.builder_config
        data_dir = os.fspath(self.data_dir)
        stats = beam_examples.CatalogStats(
            table, cfg.split_seed, cfg.derived_photometry,
            os.path.join(data_dir, normalisation.STATS_FILE),
        )  # fmt: skip
        optional = tuple(cfg.optional_modalities)
        out = {}
        for split, rows in splits.items():
            self._n_rows[split] = len(rows)
            out[split] = beam_examples.catalog_examples(
                table=table, split=split, seed=cfg.split_seed, stats=stats,
                require=tuple(m for m in stored_modalities(True) if m not in optional),
                optional=optional, derive_photometry=cfg.derived_photometry,
                skip_bad=self._skip_bad, data_dir=data_dir,
            )  # fmt: skip
        return out

    def _generate_catalog_examples(self, split: str, rows, table: str):
        optional = tuple(self.builder_config.optional_modalities)
        require = tuple(m for m in stored_modalities(True) if m not in optional)
        absent = self._absent.setdefault(split, dict.fromkeys(optional, 0))
        workers = self._num_workers
        if workers is None:
            workers = workers_lib.default_workers(len(rows))
        bad = self._bad.setdefault(split, [])
        limit = allowed_bad(len(rows), self._max_bad_fraction) if self._skip_bad else 0
        self._counts[split] = 0
        bar = tqdm(total=len(rows), desc=f"astrom3/catalog {split}")
        with bar:
            for row, example, error, _ in catalog.iter_processed(
                rows, self._stats, catalog=table, require=require,
                num_workers=workers,
                derive_photometry=self.builder_config.derived_photometry,
            ):  # fmt: skip
                bar.update()
                if error is None:
                    if len(bad) <= limit:  # past the limit: count, write nothing
                        self._counts[split] += 1
                        stored = dict(example.features)
                        if optional:
                            stored = objects.store_optional(stored, optional)
                            for m in optional:
                                absent[m] += not example.present[m]
                        yield row.id, stored
                elif self._skip_bad:
                    bad.append(
                        {
                            "row": row.index,
                            "name": row.name,
                            "id": row.id,
                            "file": error.file,
                            "problem": error.problem,
                        }
                    )
                else:
                    raise catalog_rows.RowError(
                        f"{error.problem} (split {split}; rerun with skip_bad=True "
                        f"/ --skip_bad to skip such rows and list them in "
                        f"{REPORT_NAME})",
                        catalog=table, row=row.index, id=row.id, file=error.file,
                    )  # fmt: skip
        self._check_bad_count(split, len(rows), limit)

    def _check_bad_count(self, split: str, n_rows: int, limit: int):
        n_bad = len(self._bad.get(split, ()))
        where = f"split {split} of astrom3/{self.builder_config.name}"
        listed = f"They are listed in {self._failed_report_path()}"
        if n_bad == n_rows:
            raise BuildError(
                f"{where}: all {n_rows} objects are bad, nothing to write.\n{listed}."
            )
        if n_bad > limit:
            raise BuildError(
                f"{where}: {n_bad} of {n_rows} objects are bad "
                f"({100 * n_bad / n_rows:.1f}%), more than max_bad_fraction="
                f"{self._max_bad_fraction:g} allows ({limit}).\n{listed}; fix the "
                "release, or allow more with max_bad_fraction= / --max_bad_fraction."
            )

    # ---------------------------------------------------------------- report
    def _report(self, complete: bool, error: BaseException | None = None) -> dict:
        report = {
            "config": self.builder_config.name,
            "version": str(self.version),
            "complete": complete,
            "skip_bad": self._skip_bad,
            "max_bad_fraction": self._max_bad_fraction,
            "written": self._counts,
            "skipped": {s: len(v) for s, v in self._bad.items()},
            "bad_objects": self._bad,
        }
        if self.builder_config.optional_modalities:
            # Written objects without each optional modality, per split.
            report["absent"] = self._absent
        if error is not None:
            report["error"] = str(error)
        return report

    def _failed_report_path(self) -> str:
        final = self._final_data_dir or os.fspath(self.data_dir)
        return os.path.join(os.path.dirname(final), FAILED_REPORT_NAME)

    def _download_and_prepare(self, dl_manager, download_config=None):
        out = super()._download_and_prepare(
            dl_manager=dl_manager, download_config=download_config
        )
        # self.data_dir is TFDS's temporary folder here, renamed when done.
        if self._beam:
            self._after_beam_pipeline()
        with open(os.path.join(self.data_dir, REPORT_NAME), "w") as f:
            json.dump(self._report(complete=True), f, indent=2)
        if self._stats is not None:  # see normalisation.stats_of_prepared
            self._stats.write(os.path.join(self.data_dir, normalisation.STATS_FILE))
        return out

    def _after_beam_pipeline(self):
        """Counts, bad objects and absent modalities of a Beam build, from
        its notes; a split with more bad objects than allowed fails it."""
        from astrom3_jax.data.astrom3_tfds import beam_examples  # needs apache-beam

        bad, absent = beam_examples.read_notes(os.fspath(self.data_dir))
        optional = tuple(self.builder_config.optional_modalities)
        for split, n_rows in self._n_rows.items():
            self._bad[split] = bad.get(split, [])
            self._counts[split] = self.info.splits[split].num_examples
            counts = absent.get(split, {})
            self._absent[split] = {m: counts.get(m, 0) for m in optional}
            limit = allowed_bad(n_rows, self._max_bad_fraction) if self._skip_bad else 0
            self._check_bad_count(split, n_rows, limit)

    def download_and_prepare(self, *, download_config=None, **kwargs):
        """TFDS's download_and_prepare, plus: an existing build made with looser
        bad-object options is not silently reused, and a failed build leaves
        its bad-object list in FAILED_REPORT_NAME beside the version folder."""
        download_config = download_config or tfds.download.DownloadConfig()
        final = os.fspath(self.data_dir)
        reuse = not download_config.download_mode.overwrite_dataset
        if reuse and os.path.isdir(final) and self.is_prepared():
            self._refuse_looser_build(final)
        self._final_data_dir = final
        self._bad, self._counts, self._absent, self._n_rows = {}, {}, {}, {}
        self._beam = bool(download_config.beam_runner or download_config.beam_options)
        failed = self._failed_report_path()
        try:
            with shuffle_buffer.bounded_memory(SHUFFLE_BUFFER_BYTES):
                super().download_and_prepare(download_config=download_config, **kwargs)
        except BaseException as e:
            if self._bad:  # examples were being generated
                os.makedirs(os.path.dirname(failed), exist_ok=True)
                with open(failed, "w") as f:
                    json.dump(self._report(complete=False, error=e), f, indent=2)
            raise
        if os.path.exists(failed):
            os.remove(failed)

    def _refuse_looser_build(self, data_dir: str):
        path = os.path.join(data_dir, REPORT_NAME)
        try:
            with open(path) as f:
                report = json.load(f)
        except (OSError, ValueError):
            logging.warning("%s has no readable %s; reusing it.", data_dir, REPORT_NAME)
            return
        skipped = {s: k for s, k in report.get("skipped", {}).items() if k}
        if not skipped:
            return  # nothing was left out: a strict build would be the same
        written = report.get("written", {})
        totals = {s: k + written.get(s, 0) for s, k in skipped.items()}
        if not self._skip_bad:
            asked = "this call asks for a strict build (skip_bad=False)"
        else:
            over = [
                s
                for s, k in skipped.items()
                if k > allowed_bad(totals[s], self._max_bad_fraction)
            ]
            if not over:
                return
            asked = (
                f"this call allows at most max_bad_fraction={self._max_bad_fraction:g}"
                f" per split ({', '.join(over)} exceed it)"
            )
        counts = ", ".join(f"{s} {k} of {totals[s]}" for s, k in skipped.items())
        raise BuildError(
            f"astrom3/{self.builder_config.name} in {data_dir} was built with "
            f"skip_bad=True and left out bad objects ({counts}); {asked}, so it "
            "is not reused.\n"
            f"The left-out objects are listed in {path}. To rebuild, pass "
            "overwrite=True to datasets.prepare() (--overwrite on python -m "
            f"tfds_builders.build), or delete {data_dir}."
        )


def _check_splits_disjoint(split_csvs: Mapping[str, str]):
    """An object may appear once in one split: a repeat is a train/test leak."""
    seen: dict[str, tuple[str, str]] = {}
    for split, path in split_csvs.items():
        rows = release_io.read_split_csv(path, numeric_cols=(), text_cols=("name",))
        for row in rows:
            name = (row["name"] or "").strip()
            if not name:
                continue  # reported as a bad object when its row is processed
            if name in seen:
                first_split, first_path = seen[name]
                where = (
                    "twice in the split"
                    if first_split == split
                    else f"in two splits: {first_split} ({first_path}) and {split}"
                )
                raise release_io.ReleaseError(
                    f"object listed {where}; each object must be in one split "
                    "once (a repeat leaks between train, validation and test)",
                    file=path,
                    obj=name,
                )
            seen[name] = (split, path)
