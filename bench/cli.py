"""`eebench`: the command line behind every pipeline stage."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.errors import BenchError


def cmd_list(args, params) -> None:
    from bench.data import DATASETS
    from bench.evaluate.policies import POLICIES
    from bench.models import MODELS
    from bench.train.method import METHODS, get_method

    from bench.paramdocs import method_param_docs

    print("methods:  " + ", ".join(METHODS.names()))
    for name in METHODS.names():
        cls = get_method(name)
        print(f"  {name:14s} policy={cls.exit_policy}")
        docs = method_param_docs(cls)
        for key, value in cls.defaults.items():  # methods.<name>.<key>: default, then its one-line meaning
            print(f"      {key} = {json.dumps(value)}: {docs.get(key, '(no description)')}")
    print("datasets: " + ", ".join(DATASETS.names()))
    print("models:   " + ", ".join(MODELS.names()))
    print("policies: " + ", ".join(POLICIES.names()))


def cmd_prepare(args, params) -> None:
    from bench.data import prepare_dataset
    from bench.paths import DATASETS

    section = section_for(params, "prepare", args.dataset)
    clean_before_writing(DATASETS / args.dataset)
    manifest = prepare_dataset(args.dataset, section, DATASETS)
    print(f"prepared {args.dataset}: {manifest['sizes']} -> {DATASETS / args.dataset}")


def stage_seeds(args, params) -> list[int]:
    """`--seed S` runs one seed; without it, every seed the grid gives this method (one DVC stage per method)."""
    from bench.config import seeds_of

    section_for(params, "methods", args.method)
    return [args.seed] if args.seed is not None else seeds_of(params["grid"], args.method)


def stage_models(args, params) -> list[str]:
    """`--model X` runs one model of the dataset; without it, every model the grid gives the dataset."""
    from bench.config import models_of

    section_for(params, "train", args.dataset)
    models = models_of(params, args.dataset)
    if args.model is not None and args.model not in models:
        raise BenchError(f"--model {args.model} is not studied on {args.dataset} (its models: {', '.join(models)}); "
                         f"pass one of them or add it to grid.models.{args.dataset}")
    return [args.model] if args.model is not None else models


def drop_other_runs(stage: Path, models: list[str], seeds: list[int], suffix: str = "") -> None:
    """In a stage's output folder (<dataset>/<method>), delete what is not a model of the grid (a model dropped
    from it, runs of the layout before models were a grid axis) and seed<N><suffix> entries no longer in the
    grid (the folders persist across runs of the stage)."""
    import shutil

    for folder in sorted(stage.iterdir()) if stage.is_dir() else []:
        if folder.name not in models:
            shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
            print(f"removed {folder}: not a model of the grid", flush=True)
    for model in models:
        drop_other_seeds(stage / model, seeds, suffix)


def cmd_train(args, params) -> None:
    """Train the runs of one (dataset, method) that the plan says are not done; done runs are left untouched
    (not even their checkpoints are read), so their outputs stay byte-identical."""
    from bench.execute import executor_settings, run_all, with_threads
    from bench.artefacts import regenerate
    from bench.io import read_json
    from bench.paths import run_dir
    from bench.plan import MARKER, plan_grid

    seeds = stage_seeds(args, params)
    models = stage_models(args, params)
    from bench.data.base import require_prepared
    from bench.paths import DATASETS

    require_prepared(args.dataset, DATASETS)  # one line before any executor starts
    settings = executor_settings(params, args.executor, args.workers)  # the seeds through train.executor
    params = with_threads(params, settings)
    clean_before_writing(*(run_dir(args.dataset, model, args.method, seed) for model in models for seed in seeds))
    elsewhere = []
    runs = plan_grid(params, Path("."), datasets=[args.dataset], methods=[args.method], seeds=seeds, models=models)
    for run in runs:
        where = f"{args.method}/{args.dataset}/{run.model}/s{run.seed}"
        if run.state == "done":
            (run.run_dir / MARKER).unlink(missing_ok=True)  # a dead process's marker must not stay in the output
            print(f"up to date: {where} (identity {run.digest[:12]})", flush=True)
        elif run.state == "running":
            elsewhere.append(f"{where} ({run.reason})")
    crashed = []
    for outcome in run_all(params, runs, Path("."), settings, out=lambda line: print(line, flush=True),
                           verbose=not args.quiet):
        dataset, model, method, seed = outcome.key
        record = run_dir(dataset, model, method, seed) / "metrics.json"
        metrics = read_json(record, regenerate(record)) if outcome.ok or record.is_file() else {}
        if metrics.get("status") == "failed":  # recorded; later stages report the run as failed
            continue
        if not outcome.ok:  # no record: a crash, a killed worker, a job that died for good
            crashed.append(f"{model}/s{seed}: {outcome.reason}" + (f" (log {outcome.log})" if outcome.log else ""))
            continue
        accs = " ".join(f"{a:.4f}" for a in metrics["per_exit"]["test"]["accuracy"])
        print(f"trained {args.method} on {args.dataset} with {model} seed {seed}: test acc per exit {accs}; "
              f"{metrics['time']['seconds_per_epoch']:.1f} s/epoch", flush=True)
    if crashed:
        raise BenchError(f"{len(crashed)} run(s) of {args.method}/{args.dataset} crashed: {'; '.join(crashed)}; "
                         "fix the cause and rerun (done runs are kept)")
    if args.seed is None and args.model is None:  # the stage's output folder holds exactly the grid's runs
        drop_other_runs(run_dir(args.dataset, models[0], args.method, 0).parents[1], models, seeds)
    if elsewhere:
        raise BenchError(f"{len(elsewhere)} run(s) are being trained by another process: {'; '.join(elsewhere)}; "
                         "wait for them to finish (see `eebench plan`), then rerun")


def cmd_plan(args, params) -> None:
    from bench.plan import counts, format_plan, plan_grid

    for name in args.dataset or []:
        section_for(params, "train", name)
    for name in args.method or []:
        section_for(params, "methods", name)
    runs = plan_grid(params, Path("."), datasets=args.dataset, methods=args.method, models=args.model)
    if args.json:
        print(json.dumps({"runs": [run.as_dict() for run in runs], "counts": counts(runs)}, indent=2))
    else:
        print(format_plan(runs))


def cmd_evaluate(args, params) -> None:
    """Evaluate the runs of one (dataset, method); a run whose record is up to date (bench/derived.py) is skipped."""
    from bench.derived import inputs_identity, stamp, up_to_date
    from bench.evaluate.thresholds import evaluate_run
    from bench.identity import run_key
    from bench.io import write_json
    from bench.paths import eval_path, run_dir

    evaluate = params["evaluate"]
    seeds, models = stage_seeds(args, params), stage_models(args, params)
    clean_before_writing(*(eval_path(args.dataset, model, args.method, 0).parent for model in models), recursive=False)
    for model in models:
        for seed in seeds:
            key = run_key(args.dataset, model, args.method, seed)
            inputs = inputs_identity("evaluate", key, run_dir(**key), evaluate)
            if up_to_date(eval_path(**key), inputs, []):
                print(f"up to date: evaluate {args.method}/{args.dataset}/{model}/s{seed} (inputs {inputs[:12]})")
                continue
            result = evaluate_run(run_dir(**key), evaluate["policies"], evaluate["thresholds"], model=model)
            write_json(eval_path(**key), {**result, "stamp": stamp(inputs, [])})
            print(f"evaluated {args.method} on {args.dataset} with {model} seed {seed}: "
                  + (f"{len(result['rows'])} threshold rows" if result["status"] == "ok"
                     else f"failed run ({result['reason']})"))
    if args.seed is None and args.model is None:  # the stage's output persists: it holds exactly the grid's runs
        drop_other_runs(eval_path(args.dataset, models[0], args.method, 0).parents[1], models, seeds, ".json")


def cmd_tune(args, params) -> None:
    """Tune the runs of one (dataset, method); a run whose thresholds are up to date (bench/derived.py) is skipped."""
    from bench.derived import inputs_identity, stamp, up_to_date
    from bench.identity import run_key
    from bench.paths import run_dir, study_dir, tune_dir
    from bench.tune.run import tune_outputs, tune_run

    seeds, models = stage_seeds(args, params), stage_models(args, params)
    runs = [(model, seed) for model in models for seed in seeds]
    clean_before_writing(*(d(args.dataset, model, args.method, seed) for model, seed in runs for d in (tune_dir, study_dir)))
    for model, seed in runs:
        key = (args.dataset, model, args.method, seed)
        inputs = inputs_identity("tune", run_key(*key), run_dir(*key), params["tune"])
        if up_to_date(tune_dir(*key) / "tuning.json", inputs, tune_outputs(*key, params["tune"])):
            print(f"up to date: tune {args.method}/{args.dataset}/{model}/s{seed} (inputs {inputs[:12]})")
            continue
        result = tune_run(run_dir(*key), tune_dir(*key), params["tune"], seed, study_dir(*key), model=model,
                          stamp=lambda: stamp(inputs, tune_outputs(*key, params["tune"])))
        for row in result["budgets"]:
            where = f"{args.method}/{args.dataset}/{model}/s{seed} budget {row['budget']:.2f} {row['calibrator']:16s}"
            if row.get("feasible"):
                print(f"{where} val acc {row['val']['accuracy']:.4f} cost {row['val']['flops_fraction']:.3f} | "
                      f"test acc {row['test']['accuracy']:.4f} cost {row['test']['flops_fraction']:.3f}")
            else:
                print(f"{where} infeasible on validation")
    if args.seed is None and args.model is None:  # the stage's outputs persist: they hold exactly the grid's runs
        for folder in (tune_dir, study_dir):
            drop_other_runs(folder(args.dataset, models[0], args.method, 0).parents[1], models, seeds)


def cmd_aggregate(args, params) -> None:
    from bench.analyse.aggregate import aggregate
    from bench.paths import RESULTS

    clean_before_writing(RESULTS, recursive=False)
    metrics = aggregate(params)
    for dataset, models in metrics.items():
        for model, methods in models.items() if isinstance(models, dict) else []:
            for method, m in methods.items():
                print(f"{dataset:14s} {model:14s} {method:12s} deepest-exit test acc "
                      f"{m['deepest_exit_test_accuracy']:.4f} ({m['seeds']} seeds)")


def cmd_figures(args, params) -> None:
    import time

    from bench.analyse.figures import make_figures
    from bench.analyse.report import write_report
    from bench.paths import FIGURES, RESULTS

    started = time.perf_counter()
    clean_before_writing(FIGURES)
    clean_before_writing(RESULTS, recursive=False)
    paths = make_figures(RESULTS, FIGURES, params["analyse"], params)
    for stale in sorted(set(FIGURES.glob("*")) - {Path(p) for p in paths}):  # figures/ persists across runs
        if stale.is_file():
            stale.unlink()
            print(f"removed {stale}: no longer drawn", flush=True)
    report = write_report(RESULTS, FIGURES, params)
    print(f"{len(paths)} figure files in {FIGURES}/ and {report} in {time.perf_counter() - started:.1f} s")


def cmd_regress(args, params) -> None:
    from bench.analyse.headline import regress

    ok, table = regress(Path(args.headline), Path(args.expected))
    print(table)
    if not ok:
        raise BenchError(f"headline numbers regressed against {args.expected}; if the change is intended, "
                         f"review and run `eebench bless --headline {args.headline}`")


def cmd_bless(args, params) -> None:
    from bench.analyse.headline import bless

    print(bless(Path(args.headline), Path(args.expected), args.profile))


def cmd_run(args, params) -> None:
    """Train every run of the grid (or of --dataset/--method) that the plan says is not done, through the
    configured executor, with progress lines; failed runs are listed with their logs at the end (exit 2)."""
    from bench.execute import executor_settings, report, run_all, with_threads
    from bench.plan import counts, plan_grid

    for name in args.dataset or []:
        section_for(params, "train", name)
    for name in args.method or []:
        section_for(params, "methods", name)
    settings = executor_settings(params, args.executor, args.workers)
    params = with_threads(params, settings)
    runs = plan_grid(params, Path("."), datasets=args.dataset, methods=args.method, models=args.model)
    print(f"plan: {len(runs)} runs: " + ", ".join(f"{n} {state}" for state, n in counts(runs).items()), flush=True)
    for run in runs:
        if run.state == "running":
            print(f"left alone: {run.method}/{run.dataset}/{run.model}/s{run.seed} is being trained ({run.reason})",
                  flush=True)
    report(run_all(params, runs, Path("."), settings, out=lambda line: print(line, flush=True)))


def cmd_study(args, params) -> None:
    import time

    from bench.study import run_study

    folder = Path(args.dir or f".{args.profile}")
    started = time.perf_counter()
    run_study(Path.cwd(), folder, args.profile, args.executor, args.workers, out=lambda line: print(line, flush=True))
    print(f"study '{args.profile}' in {folder}: took {time.perf_counter() - started:.0f} s")


def clean_before_writing(*folders, recursive: bool = True) -> None:
    """Remove temporary files left in a stage's output folders by a write that was killed half-way, so they
    neither pile up nor end up in DVC's outputs (.dvcignore keeps them out of hashes too)."""
    from bench.io import remove_stale_temps

    for path in remove_stale_temps(*folders, recursive=recursive):
        print(f"removed {path}: temporary file of an interrupted write", flush=True)


def drop_other_seeds(folder: Path, seeds: list[int], suffix: str = "") -> None:
    """Delete seed<N><suffix> entries of `folder` for seeds no longer in the grid."""
    import shutil

    keep = {f"seed{s}{suffix}" for s in seeds}
    for stale in sorted(folder.glob(f"seed*{suffix}")) if folder.is_dir() else []:
        if stale.name not in keep:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
            print(f"removed {stale}: seed no longer in the grid", flush=True)


def section_for(params: dict, section: str, name: str) -> dict:
    """The params section of one dataset or method; unknown names list the valid choices."""
    from bench.data import DATASETS
    from bench.train.method import METHODS

    (METHODS if section == "methods" else DATASETS).get(name, where=f"--{'method' if section == 'methods' else 'dataset'}")
    if name not in params[section]:
        raise BenchError(f"{section}.{name} is missing from params.yaml; add a `{name}:` section under `{section}`")
    return params[section][name]


def cmd_check(args, params) -> None:
    """params.yaml passed validation (main loads it): say so, with the size of the grid it describes."""
    from bench.config import models_of, runs_of

    grid = params["grid"]
    settings = sum(len(models_of(params, d)) for d in grid["datasets"])
    print(f"{args.params} is valid: {len(grid['methods'])} methods x {len(grid['datasets'])} datasets "
          f"({settings} dataset x model settings), {len(list(runs_of(params)))} runs")


def cmd_check_clean(args, params) -> None:
    from bench.provenance import check_clean

    print(check_clean(allow_dirty=args.allow_dirty))


def cmd_costs(args, params) -> None:
    from pathlib import Path

    from bench.analyse.costs import cost_rows, cost_table, update_file

    if args.update:
        changed = update_file(Path(args.update), params)
        print(f"{args.update}: cost table {'rewritten' if changed else 'already up to date'}")
    elif args.markdown:
        print(cost_table(params), end="")
    else:
        for row in cost_rows(params):
            print(f"{row['dataset']:14s} {row['model']:22s} exit {row['exit']}: {row['flops']:>12,d} FLOPs "
                  f"{row['macs']:>12,d} MACs {row['share']:6.3f} of the last exit {row['params']:>9,d} parameters")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eebench", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="study parameters (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered methods, datasets, models and exit policies")
    p = sub.add_parser("prepare", help="verify sources and write datasets/<dataset>")
    p.add_argument("--dataset", required=True)
    for name, help_ in (("train", "train a method's runs"), ("evaluate", "threshold-grid evaluation of a method's runs"),
                        ("tune", "budget-targeted exit thresholds of a method's runs (Optuna on validation)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--dataset", required=True)
        p.add_argument("--method", required=True)
        p.add_argument("--seed", type=int, default=None, help="one seed (default: every seed the grid gives the method)")
        p.add_argument("--model", default=None, help="one model (default: every model the grid gives the dataset)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "train":
            add_executor_options(p)
    p = sub.add_parser("plan", help="every run of the grid with its state: done, stale (and why), missing, failed, running")
    p.add_argument("--dataset", action="append", help="only this dataset (repeatable; default: the grid's)")
    p.add_argument("--method", action="append", help="only this method (repeatable; default: the grid's)")
    p.add_argument("--model", action="append", help="only this model (repeatable; default: each dataset's models)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("aggregate", help="tables and metrics of the whole grid into results/")
    sub.add_parser("figures", help="figures/ and results/REPORT.md from the aggregated tables (no retraining)")
    for name, help_ in (("regress", "compare headline numbers with the committed expectations (exit 1 on regression)"),
                        ("bless", "rewrite the expectations from the current headline numbers and show the diff")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--headline", default=".ci-profile/results/headline.json")
        p.add_argument("--expected", default="tests/regression/expected.json")
        if name == "bless":
            p.add_argument("--profile", default="ci", help="recorded in the expectations")
    p = sub.add_parser("study", help="run the pipeline with params.yaml + profiles/<profile>.yaml in its own folder")
    p.add_argument("--profile", required=True,
                   help="a profile of profiles/ (smoke, compare, ci, three_seeds) or the path of a YAML file (with its "
                        ".yaml suffix); either is merged onto params.yaml")
    p.add_argument("--dir", default=None, help="study folder (default: .<profile>)")
    add_executor_options(p, "train every run the study needs through this executor first, then `dvc repro`")
    p = sub.add_parser("run", help="train every missing, stale or failed run of the grid through an executor")
    p.add_argument("--dataset", action="append", help="only this dataset (repeatable; default: the grid's)")
    p.add_argument("--method", action="append", help="only this method (repeatable; default: the grid's)")
    p.add_argument("--model", action="append", help="only this model (repeatable; default: each dataset's models)")
    add_executor_options(p)
    sub.add_parser("check", help="validate params.yaml (every section) and exit 2 with one line if it is wrong; "
                                 "`make repro` runs it before `dvc repro` touches any output")
    p = sub.add_parser("check-clean", help="refuse (exit 2) while bench/, methods/, dvc.yaml, params.yaml or "
                       "pyproject.toml has uncommitted changes (`make repro` runs it)")
    p.add_argument("--allow-dirty", action="store_true", help="only warn; every run records the diff's SHA-256")
    p = sub.add_parser("costs", help="per-exit cumulative FLOPs, MACs and parameters of every configured model")
    p.add_argument("--markdown", action="store_true", help="a markdown table (as in README.md and the docs)")
    p.add_argument("--update", metavar="FILE", help="rewrite the cost block of FILE (e.g. README.md) in place")
    return parser


def add_executor_options(p: argparse.ArgumentParser, executor_help: str = "") -> None:
    p.add_argument("--executor", default=None,
                   help=executor_help or "local | processes | slurm (default: train.executor.name of params.yaml)")
    p.add_argument("--workers", type=int, default=None, help="worker processes of `processes` (train.executor.workers)")


COMMANDS = {"list": cmd_list, "prepare": cmd_prepare, "train": cmd_train, "plan": cmd_plan, "evaluate": cmd_evaluate,
            "tune": cmd_tune, "aggregate": cmd_aggregate, "figures": cmd_figures,
            "regress": cmd_regress, "bless": cmd_bless, "study": cmd_study, "run": cmd_run,
            "check": cmd_check, "check-clean": cmd_check_clean, "costs": cmd_costs}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from bench.config import load_params

        params = None if args.command in ("list", "study", "regress", "bless", "check-clean") else load_params(args.params)
        COMMANDS[args.command](args, params)
    except BenchError as exc:
        print(f"eebench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder, a missing input: the file and the fix, one line
        from bench.artefacts import os_error

        print(f"eebench: error: {os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eebench: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
