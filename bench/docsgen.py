"""Generated documentation: every table the docs and the README show that the code or the results can
produce. One source of truth: a method's page is its docstring, `defaults`, `source` and `choices`; the
parameter tables are bench/paramdocs.py next to the defaults bench/config.py resolves; the headline table
is results/summary_*.csv.

Two consumers:
- MkDocs loads this file as a hook (mkdocs.yml `hooks:`): `on_files` adds the generated pages, and
  `on_page_markdown` replaces `<!-- eebench:NAME -->` markers in hand-written pages by BLOCKS[NAME]().
- The README keeps generated blocks between `<!-- eebench:NAME:start -->` and `<!-- eebench:NAME:end -->`;
  `python -m bench.docsgen --readme` rewrites them, and tests/test_docs.py checks they are current.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _cell(value: object) -> str:
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    text = text.removesuffix("\n...").strip()
    return text.replace("|", "\\|").replace("\n", " ")


def _prose(text: str) -> str:
    """Plain text as Markdown prose: brackets outside code spans are escaped (`[K, N]` is not a link)."""
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else p.replace("[", "\\[").replace("]", "\\]") for p in parts)


def _doc(obj: object) -> str:
    return _prose(inspect.cleandoc(obj.__doc__ or "").strip())


# ---------------------------------------------------------------------------------------------- methods

def method_names() -> list[str]:
    from bench.train.method import METHODS

    return METHODS.names()


def method_section(name: str, level: int = 2) -> str:
    """One method, from its own code: docstring, exit policy, source, parameters (default, meaning, our
    choice) and every other recorded choice."""
    from bench.paramdocs import method_param_docs
    from bench.train.method import get_method

    cls = get_method(name)
    module = inspect.getmodule(cls)
    docs = method_param_docs(cls)
    where = Path(inspect.getfile(cls))
    try:
        where = where.resolve().relative_to(ROOT)
    except ValueError:
        where = Path(where.name)
    hashes = "#" * level
    lines = [f"{hashes} `{name}`", ""]
    if module is not None and _doc(module):
        lines += [_doc(module), ""]
    lines += [_doc(cls), "",
              f"- **Exit policy:** [`{cls.exit_policy}`](exit-policies.md#{cls.exit_policy})",
              f"- **Source:** {cls.source}",
              f"- **Code:** `{where.as_posix()}` (class `{cls.__name__}`)", ""]
    if cls.defaults:
        lines += ["| parameter | default | meaning | where the default comes from |", "| --- | --- | --- | --- |"]
        for key, value in cls.defaults.items():
            lines.append(f"| `{key}` | `{_cell(value)}` | {_prose(_cell(docs.get(key, '')))} | "
                         f"{_prose(_cell(cls.choices.get(key, 'the source')))} |")
        lines.append("")
    others = {k: v for k, v in cls.choices.items() if k not in cls.defaults}
    if others:
        lines += ["Other choices that are ours (recorded in every run's `metrics.json`):", ""]
        lines += [f"- **{key}:** {_prose(_cell(value))}" for key, value in others.items()]
        lines.append("")
    return "\n".join(lines)


def methods_table() -> str:
    from bench.train.method import get_method

    lines = ["| method | exit policy | parameters (defaults) | summary |", "| --- | --- | --- | --- |"]
    for name in method_names():
        cls = get_method(name)
        summary = _doc(cls).split("\n\n")[0].replace("\n", " ")
        summary = summary if len(summary) <= 160 else summary[:157].rsplit(" ", 1)[0] + " …"
        params = ", ".join(f"`{k}`" for k in cls.defaults) or "none"
        lines.append(f"| [`{name}`](method-reference.md#{name}) | `{cls.exit_policy}` | {params} | {_cell(summary)} |")
    return "\n".join(lines)


def method_reference_page() -> str:
    head = ["# Method reference", "",
            "Generated at build time from each method's own code (its docstring, `defaults`, `source`, `choices`",
            "and `exit_policy`; the one-line meaning of each parameter is `bench/paramdocs.py`). What the",
            "sources say and how we read them is in the [method specification](methods.md).", "",
            methods_table(), ""]
    return "\n".join(head + [method_section(name) for name in method_names()])


# ---------------------------------------------------------------------------------------------- params

def default_params() -> dict:
    from bench.config import load_params

    return load_params(ROOT / "params.yaml")


def params_reference() -> str:
    """Every section and key of params.yaml with its default study value and one-line meaning."""
    from bench.paramdocs import param_doc, param_rows

    params = default_params()
    lines: list[str] = []
    for section, rows in param_rows(params).items():
        lines += [f"### `{section}`", "", "| key | default study | meaning |", "| --- | --- | --- |"]
        lines += [f"| `{key}` | `{_cell(value)}` | {_prose(_cell(param_doc(params, section, key)))} |" for key, value in rows]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- policies, data, models

def policies_table() -> str:
    from bench.evaluate.policies import POLICIES

    lines = []
    for name in POLICIES.names():
        policy = POLICIES.get(name)
        rng = f"integers in [{policy.low:g}, {policy.high:g}]" if policy.integer else f"[{policy.low:g}, {policy.high:g}]"
        needs = f"; needs `{', '.join(policy.needs)}` from the method" if policy.needs else ""
        lines += [f"### `{name}`", "", _doc(policy.score), "", f"Thresholds searched in {rng}{needs}.", ""]
    return "\n".join(lines)


def datasets_table() -> str:
    from bench.data import DATASETS

    params = default_params()
    lines = ["| dataset | classes | default model | prepare defaults |", "| --- | --- | --- | --- |"]
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        model = params["train"].get(name, {}).get("model", {}).get("name", "")
        lines.append(f"| `{name}` | {spec.num_classes} | `{model}` | `{_cell(spec.prepare_defaults)}` |")
    return "\n".join(lines)


def models_table() -> str:
    from bench.config import model_defaults
    from bench.models import MODELS

    lines = ["| model | what it is | constructor defaults |", "| --- | --- | --- |"]
    for name in MODELS.names():
        lines.append(f"| `{name}` | {_cell(_doc(MODELS.get(name)))} | `{_cell(model_defaults(name))}` |")
    return "\n".join(lines)


def cost_tables() -> str:
    from bench.analyse.costs import cost_table

    return cost_table(default_params())


# ---------------------------------------------------------------------------------------------- results

def headline_table(results: Path | None = None) -> str:
    """Per dataset × method: deepest-exit test accuracy and test accuracy at the middle tuned budget
    (mean [95 % interval] over seeds), from results/summary_exits.csv and results/summary_budgets.csv."""
    from bench.artefacts import read_table

    results = results or ROOT / "results"
    exits = read_table(results / "summary_exits.csv")
    budgets = read_table(results / "summary_budgets.csv")
    exits = exits[exits.metric == "test_accuracy"]
    deepest = exits[exits.exit == exits.groupby(["dataset", "method"]).exit.transform("max")]
    levels = sorted(budgets.budget.unique())
    middle = levels[len(levels) // 2]
    at = budgets[(budgets.budget == middle)].set_index(["dataset", "method", "metric"])

    def fmt(row, scale=100.0, digits=1):
        return f"{row['mean'] * scale:.{digits}f} [{row.ci_low * scale:.{digits}f}, {row.ci_high * scale:.{digits}f}]"

    datasets = list(dict.fromkeys(deepest.dataset))
    header = ["method"] + [f"{d}: {col}" for d in datasets for col in ("deepest exit", f"budget {middle:g}")]
    lines = ["| " + " | ".join(header) + " | seeds |", "| " + " | ".join("---" for _ in header) + " | --- |"]
    for method in sorted(deepest.method.unique()):
        cells, seeds = [], set()
        for dataset in datasets:
            row = deepest[(deepest.dataset == dataset) & (deepest.method == method)]
            if row.empty:
                cells += ["—", "—"]
                continue
            row = row.iloc[0]
            seeds.add(int(row.n))
            key = (dataset, method, "test_accuracy")
            cells += [fmt(row), fmt(at.loc[key]) if key in at.index else "—"]
        lines.append(f"| `{method}` | " + " | ".join(cells) + f" | {'/'.join(map(str, sorted(seeds)))} |")
    return "\n".join(lines)


def benchmarks_page() -> str:
    text = (ROOT / "benchmarks" / "README.md").read_text()
    # the scripts live outside the docs: name them as code instead of linking
    return re.sub(r"\[([^\]]+)\]\((?!https?:)[^)]*\)", r"\1", text)


# ---------------------------------------------------------------------------------------------- blocks

BLOCKS = {
    "methods-table": methods_table,
    "params": params_reference,
    "policies": policies_table,
    "datasets": datasets_table,
    "models": models_table,
    "costs": cost_tables,
    "headline": headline_table,
}
README_BLOCKS = ("headline",)
GENERATED_PAGES = {"method-reference.md": method_reference_page, "benchmarks.md": benchmarks_page}
MARKER = re.compile(r"<!-- eebench:([a-z-]+) -->")


def fill_markers(markdown: str) -> str:
    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in BLOCKS:
            raise KeyError(f"unknown generated block <!-- eebench:{name} -->; known: {', '.join(BLOCKS)}")
        return BLOCKS[name]()

    return MARKER.sub(replace, markdown)


def render_readme(text: str) -> str:
    """The README with every generated block replaced by the generator's current output."""
    for name in README_BLOCKS:
        pattern = re.compile(rf"(<!-- eebench:{name}:start -->\n).*?(<!-- eebench:{name}:end -->)", re.S)
        if not pattern.search(text):
            raise KeyError(f"README.md has no <!-- eebench:{name}:start --> … <!-- eebench:{name}:end --> block")
        text = pattern.sub(lambda m: m.group(1) + BLOCKS[name]() + "\n" + m.group(2), text)
    return text


# ---------------------------------------------------------------------------------------------- mkdocs hook

def on_files(files, config):
    from mkdocs.structure.files import File

    for path, build in GENERATED_PAGES.items():
        files.append(File.generated(config, path, content=build()))
    return files


def on_page_markdown(markdown, page, config, files):
    return fill_markers(markdown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="regenerate the README's generated blocks")
    parser.add_argument("--readme", default=str(ROOT / "README.md"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is not current")
    args = parser.parse_args(argv)
    path = Path(args.readme)
    text = path.read_text()
    new = render_readme(text)
    if args.check:
        if new != text:
            print(f"{path}: generated blocks are stale; run `make readme`", file=sys.stderr)
            return 1
        return 0
    if new != text:
        from bench.io import write_text

        write_text(path, new)
        print(f"{path}: generated blocks rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
