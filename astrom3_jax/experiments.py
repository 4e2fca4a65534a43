r"""The paper's experiment grid: does CLIP pre-training help classification?

  python -m astrom3_jax.experiments --root runs/grid_cpu --preset cpu \
      --seeds 42,0,66 [--modes photo,spectra,meta,all] \
      [--subsets full,sub50,sub25,sub10] [--dry_run | --results_only]
  python -m astrom3_jax.experiments --root runs/grid_full --preset cpu \
      --survey full --subsets sub25,sub10     # at the real release's size
  python -m astrom3_jax.experiments --root runs/grid_paper --preset paper \
      --seeds 42,0,66,12,123 [--pretrained published]

For every split seed: one CLIP pre-training (or the published
AstroM3-CLIP-<seed>), then each (mode, subset) classifier from scratch and
from it, each in its own workdir under --root; started again, the grid skips
finished runs and resumes a killed one. Writes <root>/results.{json,md,png}.
`--compare incomplete` (synthetic presets) pre-trains on complete objects
only vs also on objects lacking modalities; `--withhold spectra` also scores
fused runs without spectra (results_without_spectra.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np

from astrom3_jax import cli, training
from astrom3_jax.cli import host_memory
from astrom3_jax.configs import base, finetune, pretrain

MODES = finetune.MODES  # the paper's four
SUBSETS = ("full", "sub50", "sub25", "sub10")
# The two arms each comparison contrasts (the first is the baseline).
ARMS = {"scratch": ("scratch", "clip"), "incomplete": ("complete", "incomplete")}
ARM_LABELS = {
    "scratch": "scratch",
    "clip": "CLIP",
    "complete": "complete only",
    "incomplete": "+ incomplete",
}
# The synthetic release each arm reads, per survey size (`--survey`): the
# complete objects (scratch, clip and complete arms), or the same objects plus
# twice as many that lack a modality (the incomplete arm).
SURVEY_RELEASES = {
    "small": {"complete": "synthetic_small", "incomplete": "synthetic_sky"},
    "full": {"complete": "synthetic_full", "incomplete": "synthetic_bigsky"},
}
# How much longer a run takes on each survey than on `small`, for estimates
# made before anything has been measured (the full survey has 10x the stars).
SURVEY_TIME_SCALE = {"small": 1.0, "full": 10.0}
MODE_NAMES = {
    "photo": "photometry",
    "spectra": "spectra",
    "meta": "metadata",
    "all": "all",
}
DONE_FILE = "grid_done.json"
# Rough seconds per run when nothing has been measured yet (2-core CPU for
# cpu; one accelerator for paper), per subset; pre-training per seed.
DEFAULT_SECONDS = {
    "cpu": {"pretrain": 300, "full": 60, "sub50": 35, "sub25": 20, "sub10": 12},
    "smoke": {"pretrain": 15, "full": 8, "sub50": 8, "sub25": 8, "sub10": 8},
    "paper": {"pretrain": 3600, "full": 900, "sub50": 500, "sub25": 300, "sub10": 150},
}


@dataclasses.dataclass(frozen=True)
class FinetuneRun:
    mode: str
    subset: str
    arm: str  # scratch | clip | complete | incomplete
    seed: int

    @property
    def clip(self) -> bool:
        """Starts from a pre-training."""
        return self.arm != "scratch"

    @property
    def name(self) -> str:
        return f"{self.mode}_{self.subset}_{self.arm}_seed{self.seed}"


def dataset_name(
    preset: str, subset: str, seed: int, arm: str = "clip", survey: str = "small"
) -> str:
    """The data set of one run: `<subset>_<seed>` of the real release for the
    paper preset, else the synthetic survey of that size
    (`synthetic_small_<subset>_<seed>`, or `synthetic_full_...` at the real
    release's size).

    With `--compare incomplete` both arms are pre-trained: `complete` on the
    complete objects only (synthetic_small) and `incomplete` on the same
    objects plus twice as many that lack a spectrum or catalogue values
    (synthetic_sky, whose labelled splits are synthetic_small's; with
    survey='full', synthetic_full and synthetic_bigsky), so each is fine-tuned
    and tested on the same labelled objects.
    """
    if preset == "paper":
        return f"{subset}_{seed}"
    releases = SURVEY_RELEASES[survey]
    release = releases["incomplete" if arm == "incomplete" else "complete"]
    return f"{release}_{subset}_{seed}"


def pretrain_config(
    preset: str, seed: int, arm: str = "clip", epochs: int = 0, survey: str = "small"
):
    c = pretrain.get_config(preset)
    c.dataset = dataset_name(preset, "full", seed, arm, survey)
    c.seed = seed
    c.progress_bar = False
    if epochs:
        c.num_epochs = epochs
    return c


def finetune_config(
    preset: str,
    run: FinetuneRun,
    init_from: str,
    data_dir: str,
    modality_dropout: float = 0.0,
    withhold: tuple[str, ...] = (),
    survey: str = "small",
):
    """The run's fine-tuning config; a fused (`all`) run with `withhold` is
    also scored on the test split with those modalities withheld."""
    arg = f"{run.mode},{run.subset}" + (",clip" if run.clip else "") + f",{preset}"
    c = finetune.get_config(arg)
    c.dataset = dataset_name(preset, run.subset, run.seed, run.arm, survey)
    c.seed = run.seed
    c.data_dir = data_dir
    c.progress_bar = False
    c.modality_dropout = modality_dropout
    if run.clip:
        c.init_from = init_from
    if withhold and run.mode == "all":
        c.evals[withheld_eval_name(withhold)] = base.eval_entry(
            "report", "test", "end", "test_", withhold=tuple(withhold), files=False
        )
    return c


def withheld_eval_name(withhold) -> str:
    """The `config.evals` name of the test report with `withhold` withheld."""
    return f"test_without_{'_'.join(withhold)}"


class Grid:
    """The planned runs of one grid root and their state on disk."""

    def __init__(
        self,
        root,
        preset,
        seeds,
        modes,
        subsets,
        pretrained,
        data_dir="",
        *,
        compare="scratch",
        modality_dropout=0.0,
        withhold=(),
        pretrain_epochs=0,
        survey="small",
    ):
        if survey not in SURVEY_RELEASES:
            raise ValueError(
                f"unknown survey {survey!r}: choose one of {sorted(SURVEY_RELEASES)}"
            )
        self.root, self.preset, self.survey = root, preset, survey
        self.seeds, self.modes, self.subsets = seeds, modes, subsets
        self.pretrained, self.data_dir = pretrained, data_dir
        self.compare, self.arms = compare, ARMS[compare]
        self.modality_dropout, self.withhold = modality_dropout, tuple(withhold)
        self.pretrain_epochs = pretrain_epochs
        self.runs = [
            FinetuneRun(m, s, arm, seed)
            for seed in seeds
            for m in modes
            for s in subsets
            for arm in self.arms
        ]

    @property
    def pretrain_arms(self) -> list[str]:
        return [a for a in self.arms if a != "scratch"]

    def pretrain_dir(self, seed: int, arm: str = "clip") -> str:
        if arm == "clip":
            return os.path.join(self.root, "pretrain", f"seed{seed}")
        return os.path.join(self.root, "pretrain", arm, f"seed{seed}")

    def run_dir(self, run: FinetuneRun) -> str:
        return os.path.join(self.root, "finetune", run.name)

    def init_from(self, seed: int, arm: str = "clip") -> str:
        if self.pretrained == "published":
            return f"AstroMLCore/AstroM3-CLIP-{seed}"
        return self.pretrain_dir(seed, arm)

    @staticmethod
    def status(workdir: str) -> str:
        if os.path.exists(os.path.join(workdir, DONE_FILE)):
            return "done"
        return "partial" if os.path.isdir(workdir) else "todo"

    def _measured(self) -> dict:
        """Mean seconds of finished runs by kind ('pretrain' or subset)."""
        got = {}
        dirs = [
            (self.pretrain_dir(s, a), "pretrain")
            for s in self.seeds
            for a in self.pretrain_arms
        ]
        dirs += [(self.run_dir(r), r.subset) for r in self.runs]
        for d, kind in dirs:
            path = os.path.join(d, DONE_FILE)
            if os.path.exists(path):
                with open(path) as f:
                    got.setdefault(kind, []).append(json.load(f)["seconds"])
        return {k: float(np.mean(v)) for k, v in got.items()}

    def plan(self) -> list[tuple[str, str, str, float]]:
        """(kind, name, status, estimated seconds) of every run, in order."""
        scale = 1.0 if self.preset == "paper" else SURVEY_TIME_SCALE[self.survey]
        guess = {k: v * scale for k, v in DEFAULT_SECONDS[self.preset].items()}
        est = dict(guess, **self._measured())
        out = []
        for seed in self.seeds:
            for arm in self.pretrain_arms if self.pretrained == "train" else ():
                d = self.pretrain_dir(seed, arm)
                name = f"seed{seed}" if arm == "clip" else f"{arm}_seed{seed}"
                out.append(("pretrain", name, self.status(d), est["pretrain"]))
            for r in (r for r in self.runs if r.seed == seed):
                out.append(
                    ("finetune", r.name, self.status(self.run_dir(r)), est[r.subset])
                )
        return out

    def describe_plan(self) -> str:
        rows = self.plan()
        todo = [r for r in rows if r[2] != "done"]
        lines = [f"{k:8s} {n:32s} {s:8s} ~{t / 60:.1f} min" for k, n, s, t in rows]
        total = sum(r[3] for r in todo)
        lines.append(
            f"{len(rows)} runs, {len(rows) - len(todo)} done, {len(todo)} to run: "
            f"about {total / 60:.0f} min ({self.preset} preset)"
        )
        return "\n".join(lines)

    # ----------------------------------------------------------- running
    def _mark_done(self, workdir: str, seconds: float, extra=None) -> None:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, DONE_FILE), "w") as f:
            json.dump({"seconds": seconds, **(extra or {})}, f)

    def run_all(self, log=print) -> None:
        for seed in self.seeds:
            for arm in self.pretrain_arms if self.pretrained == "train" else ():
                d = self.pretrain_dir(seed, arm)
                if self.status(d) != "done":
                    log(f"[grid] pre-training {arm} seed {seed} in {d}")
                    t0 = time.time()
                    c = pretrain_config(
                        self.preset, seed, arm, self.pretrain_epochs, self.survey
                    )
                    c.data_dir = self.data_dir
                    training.run(c, d)
                    self._mark_done(d, time.time() - t0)
            for r in (r for r in self.runs if r.seed == seed):
                d = self.run_dir(r)
                if self.status(d) == "done":
                    continue
                log(f"[grid] fine-tuning {r.name} in {d}")
                t0 = time.time()
                c = finetune_config(
                    self.preset,
                    r,
                    self.init_from(seed, r.arm),
                    self.data_dir,
                    self.modality_dropout,
                    self.withhold,
                    self.survey,
                )
                got = training.run(c, d).reports
                extra = {"accuracy": got["test"]["accuracy"]}
                held = withheld_eval_name(self.withhold)
                if held in got:
                    extra[f"accuracy_without_{'_'.join(self.withhold)}"] = got[held][
                        "accuracy"
                    ]
                self._mark_done(d, time.time() - t0, extra)

    # ----------------------------------------------------------- results
    def collect(self, eval_file: str = "eval.json") -> dict:
        """{(mode, subset, arm): {seed: test accuracy}} from each run's
        `eval_file`."""
        out = {}
        for r in self.runs:
            path = os.path.join(self.run_dir(r), eval_file)
            if not os.path.exists(path):
                continue
            with open(path) as f:
                acc = json.load(f)["accuracy"]
            out.setdefault((r.mode, r.subset, r.arm), {})[r.seed] = acc
        return out


def summarize(
    results: dict, modes=MODES, subsets=SUBSETS, arms=ARMS["scratch"]
) -> list[dict]:
    """Per (mode, subset): mean and population std (%) of both arms (e.g.
    scratch and CLIP) over seeds, the mean gain of the second over the
    first, and a paired t-test over the seeds both have."""
    from scipy import stats

    rows = []
    first, second = arms
    for mode in modes:
        for subset in subsets:
            a = results.get((mode, subset, first), {})
            b = results.get((mode, subset, second), {})
            if not a and not b:
                continue
            row = {"mode": mode, "subset": subset, "arms": list(arms)}
            for name, d in ((first, a), (second, b)):
                v = 100 * np.asarray(list(d.values()), float)
                row[name] = {
                    "mean": float(v.mean()) if len(v) else None,
                    "std": float(v.std(ddof=0)) if len(v) else None,
                    "n": len(v),
                    "per_seed": {str(k): 100 * x for k, x in sorted(d.items())},
                }
            paired = sorted(set(a) & set(b))
            row["paired_seeds"] = paired
            if len(paired) >= 2:
                x = np.array([a[s] for s in paired]) * 100
                y = np.array([b[s] for s in paired]) * 100
                row["gain"] = float(np.mean(y - x))
                # Identical differences on every seed leave the t statistic
                # undefined (zero variance): no p-value rather than p = 0.
                spread = np.ptp(y - x) > 1e-9
                p = stats.ttest_rel(y, x).pvalue if spread else np.nan
                row["p_value"] = None if np.isnan(p) else float(p)
            else:
                row["gain"], row["p_value"] = None, None
            rows.append(row)
    return rows


def _cell(d) -> str:
    if d["mean"] is None:
        return "-"
    return f"{d['mean']:.2f} ± {d['std']:.2f}"


def to_markdown(rows: list[dict], arms=ARMS["scratch"]) -> str:
    a, b = arms
    lines = [
        f"| mode | subset | {ARM_LABELS[a]} | {ARM_LABELS[b]} | gain | "
        "p (paired t) | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gain = "-" if r["gain"] is None else f"{r['gain']:+.2f}"
        p = "-" if r["p_value"] is None else f"{r['p_value']:.3f}"
        lines.append(
            f"| {MODE_NAMES[r['mode']]} | {r['subset']} | {_cell(r[a])} | "
            f"{_cell(r[b])} | {gain} | {p} | {len(r['paired_seeds'])} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str, arms=ARMS["scratch"]) -> None:
    # A Figure with its own Agg canvas: no pyplot, so a notebook's backend
    # is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    fig = Figure(figsize=(3.6 * len(modes), 3.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(modes))
    axes = np.atleast_1d(axes)
    for ax, mode in zip(axes, modes, strict=True):
        mine = [r for r in rows if r["mode"] == mode]
        x = np.arange(len(mine))
        for name, color in zip(arms, ("tab:gray", "tab:blue"), strict=True):
            m = [
                r[name]["mean"] if r[name]["mean"] is not None else np.nan for r in mine
            ]
            s = [r[name]["std"] if r[name]["std"] is not None else np.nan for r in mine]
            label = ARM_LABELS[name]
            ax.errorbar(x, m, yerr=s, marker="o", capsize=3, color=color, label=label)
        ax.set_xticks(x, [r["subset"] for r in mine])
        ax.set_title(MODE_NAMES[mode])
        ax.set_xlabel("labelled subset")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_results(grid: Grid) -> list[dict]:
    """Writes <root>/results.json (every run's test accuracy), results.md
    (mean and population std over seeds, paired t-test per row, as the
    paper's table) and results.png (test accuracy against subset, scratch vs
    CLIP, per mode); with `--withhold M`, the same for the fused runs scored
    on the test split with M withheld (results_without_M.*)."""
    # Local: it loads JAX, which main() must not do before its tcmalloc restart.
    from astrom3_jax.training import reports

    a, b = grid.arms
    tables = [("results", "eval.json", "Test accuracy")]
    if grid.withhold:
        held = "_".join(grid.withhold)
        tables.append(
            (
                f"results_without_{held}",
                reports.eval_file(grid.withhold),
                f"Test accuracy with {', '.join(grid.withhold)} withheld",
            )
        )
    first = None
    for stem, eval_file, what in tables:
        rows = summarize(grid.collect(eval_file), grid.modes, grid.subsets, grid.arms)
        with open(os.path.join(grid.root, f"{stem}.json"), "w") as f:
            json.dump(
                {
                    "preset": grid.preset,
                    "seeds": grid.seeds,
                    "compare": grid.compare,
                    "modality_dropout": grid.modality_dropout,
                    "rows": rows,
                },
                f,
                indent=2,
            )
        with open(os.path.join(grid.root, f"{stem}.md"), "w") as f:
            f.write(
                f"{what} (%), mean ± population std over seeds {grid.seeds} "
                f"({grid.preset} preset); gain = mean paired {ARM_LABELS[b]} - "
                f"{ARM_LABELS[a]}.\n\n"
            )
            f.write(to_markdown(rows, grid.arms))
        if rows:
            plot(rows, os.path.join(grid.root, f"{stem}.png"), grid.arms)
        first = rows if first is None else first
    return first


def _list(value: str, cast=str) -> list:
    return [cast(v) for v in value.split(",") if v]


def main(argv):
    del argv
    from absl import flags

    f = flags.FLAGS
    modes, subsets = _list(f.modes), _list(f.subsets)
    bad = [m for m in modes if m not in MODES] + [
        s for s in subsets if s not in SUBSETS
    ]
    if bad:
        raise cli.errors.ConfigError(f"unknown modes/subsets: {bad}")
    if f.compare == "incomplete" and f.preset == "paper":
        raise cli.errors.ConfigError(
            "--compare incomplete needs a synthetic preset (cpu or smoke): the real "
            "release has no objects that lack a modality"
        )
    grid = Grid(
        f.root,
        f.preset,
        _list(f.seeds, int),
        modes,
        subsets,
        f.pretrained,
        f.data_dir,
        compare=f.compare,
        modality_dropout=f.modality_dropout,
        withhold=_list(f.withhold),
        pretrain_epochs=f.pretrain_epochs,
        survey=f.survey,
    )
    print(grid.describe_plan(), flush=True)
    if f.dry_run:
        return
    if f.results_only:
        # Tables of what has finished, e.g. of cells run by separate
        # invocations into one root; nothing is trained.
        rows = write_results(grid)
        print(to_markdown(rows, grid.arms))
        return
    host_memory.reexec_with_tcmalloc(enabled=True)
    host_memory.warn_if_slow_allocator()
    os.makedirs(f.root, exist_ok=True)
    grid.run_all()
    rows = write_results(grid)
    print(to_markdown(rows, grid.arms))
    print(f"wrote {os.path.join(f.root, 'results.md')} and results.json, results.png")


def define_flags():
    from absl import flags

    flags.DEFINE_string("root", None, "Folder for every run of the grid.")
    flags.DEFINE_enum("preset", "cpu", ["cpu", "smoke", "paper"], "Config preset.")
    flags.DEFINE_string("seeds", "42,0,66", "Split seeds, comma-separated.")
    flags.DEFINE_string("modes", ",".join(MODES), "Modes, comma-separated.")
    flags.DEFINE_string("subsets", ",".join(SUBSETS), "Subsets, comma-separated.")
    flags.DEFINE_enum(
        "pretrained",
        "train",
        ["train", "published"],
        "train: pre-train per seed; published: the AstroM3-CLIP-<seed> weights.",
    )
    flags.DEFINE_string("data_dir", "", "TFDS data_dir ('' = the TFDS default).")
    flags.DEFINE_enum(
        "compare",
        "scratch",
        list(ARMS),
        "scratch: from scratch vs from CLIP; incomplete: CLIP pre-trained on the "
        "complete objects only vs also on objects lacking modalities.",
    )
    flags.DEFINE_float("modality_dropout", 0.0, "Fine-tuning modality dropout.")
    flags.DEFINE_string(
        "withhold", "", "Also score fused runs with these modalities withheld."
    )
    flags.DEFINE_enum(
        "survey",
        "small",
        list(SURVEY_RELEASES),
        "Synthetic survey size (cpu and smoke presets): small (about 2,000 "
        "stars) or full (21,440, the real release's size).",
    )
    flags.DEFINE_integer("pretrain_epochs", 0, "Pre-training epochs (0: the preset's).")
    flags.DEFINE_bool("dry_run", False, "Print the plan and estimated time only.")
    flags.DEFINE_bool(
        "results_only",
        False,
        "Write results.{md,json,png} from the runs already finished; run nothing.",
    )
    flags.mark_flag_as_required("root")


if __name__ == "__main__":
    define_flags()
    cli.main(main)
