"""The docs and the README stay true to the code: every parameter has a meaning, every method a generated
section, the README's generated blocks equal their generator's output, the code's citations of the method
specification name sections that exist, and the site builds with `mkdocs build --strict` (slow)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench import docsgen, paramdocs
from bench.cli import main
from bench.config import load_params, validate
from bench.data import DATASETS
from bench.errors import BenchError
from bench.train.method import METHODS, get_method

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_parameter_has_a_one_line_meaning(name):
    cls = get_method(name)
    docs = paramdocs.method_param_docs(cls)
    assert paramdocs.missing_method_docs(cls) == []
    assert set(paramdocs.METHOD_PARAMS.get(name, {})) <= set(cls.defaults), "a documented parameter no longer exists"
    assert all("\n" not in docs[key] and len(docs[key]) <= 160 for key in cls.defaults)


def test_every_params_key_has_a_one_line_meaning_and_none_is_stale():
    resolved = load_params(ROOT / "params.yaml")
    assert paramdocs.missing_section_docs(resolved) == []
    # every documented key exists in some section: the default study's, every dataset's prepare defaults,
    # every model's constructor arguments
    from bench.config import model_defaults
    from bench.models import MODELS

    existing = {(section, key) for section, rows in paramdocs.param_rows(resolved).items() for key, _ in rows}
    generic = {(paramdocs.section_name(s.split("."), set(DATASETS.names())), k) for s, k in existing}
    generic |= {("prepare.<dataset>", k) for d in DATASETS.names() for k in DATASETS.get(d).prepare_defaults}
    generic |= {("train.<dataset>.model", k) for m in MODELS.names() for k in [*model_defaults(m), "name"]}
    generic.add(("train.<dataset>", "models"))  # optional per-model settings, split off before validation (config.py)
    from bench.train.recipe import OPTIMIZERS, SCHEDULE_COMMON, SCHEDULES  # every optimiser's and schedule's keys

    generic |= {("train.<dataset>.optimizer", k) for n in OPTIMIZERS.names() for k in ["name", *OPTIMIZERS.get(n).defaults]}
    generic |= {("train.<dataset>.schedule", k) for n in SCHEDULES.names()
                for k in ["name", *SCHEDULE_COMMON, *SCHEDULES.get(n).defaults]}
    generic |= {tuple(s.rsplit(".", 1)) for s in paramdocs.SECTIONS if "." in s}  # subsections (analyse.claims)
    documented = {(section, key) for section, keys in paramdocs.SECTIONS.items() for key in keys}
    assert documented - generic == set()


def test_a_plugin_param_docs_class_attribute_takes_precedence():
    cls = type("Plugin", (get_method("joint"),), {"param_docs": {"label_smoothing": "plugin's own line"}})
    cls.name = "joint"
    assert paramdocs.method_param_docs(cls)["label_smoothing"] == "plugin's own line"


def test_eebench_list_prints_every_parameter_with_its_meaning(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "(no description)" not in out
    for name in METHODS.names():
        cls = get_method(name)
        block = out[out.index(f"  {name} "):]
        for key, value in cls.defaults.items():
            line = f"{key} = {yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
            assert re.search(rf"^      {re.escape(key)} = .+: {re.escape(paramdocs.method_param_docs(cls)[key])}$",
                             block, re.M), (name, key, line)


@pytest.mark.parametrize("name", METHODS.names())
def test_the_method_reference_is_generated_from_the_method_itself(name):
    cls = get_method(name)
    page = docsgen.method_reference_page()
    section = page[page.index(f"## `{name}`"):]
    section = section[:section.index("\n## `", 1)] if "\n## `" in section[1:] else section
    first_line = cls.__doc__.strip().splitlines()[0].replace("[", "\\[").replace("]", "\\]")
    assert first_line.split("`")[0] in section
    assert f"`{cls.exit_policy}`" in section and cls.source.replace("|", "\\|")[:40] in section
    for key in cls.defaults:
        assert f"| `{key}` |" in section
    for key in cls.choices:
        assert key in section


def write_summaries(folder: Path) -> None:
    exits = pd.DataFrame([
        # dataset, method, exit, metric, mean, ci_low, ci_high, n
        ("d1", "m1", 0, "test_accuracy", 0.5, 0.4, 0.6, 3),
        ("d1", "m1", 1, "test_accuracy", 0.91234, 0.9, 0.925, 3),
        ("d1", "m1", 1, "test_ece", 0.07, 0.06, 0.08, 3),
        ("d1", "m2", 0, "test_accuracy", 0.7, 0.6, 0.8, 5),
        ("d1", "m2", 1, "test_accuracy", 0.8, 0.75, 0.85, 5),
    ], columns=["dataset", "method", "exit", "metric", "mean", "ci_low", "ci_high", "n"])
    budgets = pd.DataFrame([
        ("d1", "m1", 0.3, "test_accuracy", 0.1, 0.0, 0.2, 3),
        ("d1", "m1", 0.5, "test_accuracy", 0.88, 0.87, 0.89, 3),
        ("d1", "m1", 0.5, "test_flops_fraction", 0.49, 0.48, 0.5, 3),
        ("d1", "m1", 0.7, "test_accuracy", 0.9, 0.89, 0.91, 3),
        ("d1", "m2", 0.5, "test_accuracy", 0.77, 0.76, 0.78, 5),
    ], columns=["dataset", "method", "budget", "metric", "mean", "ci_low", "ci_high", "n"])
    exits.to_csv(folder / "summary_exits.csv", index=False)
    budgets.to_csv(folder / "summary_budgets.csv", index=False)


def test_headline_table_on_hand_computed_values(tmp_path):
    write_summaries(tmp_path)
    assert docsgen.headline_table(tmp_path).splitlines() == [
        "| method | d1: deepest exit | d1: budget 0.5 | seeds |",
        "| --- | --- | --- | --- |",
        "| `m1` | 91.2 [90.0, 92.5] | 88.0 [87.0, 89.0] | 3 |",
        "| `m2` | 80.0 [75.0, 85.0] | 77.0 [76.0, 78.0] | 5 |",
    ]


def test_readme_generated_blocks_are_current():
    text = (ROOT / "README.md").read_text()
    assert docsgen.render_readme(text) == text, "README.md's generated blocks are stale: run `make readme`"


def test_render_readme_replaces_only_the_block(tmp_path, monkeypatch):
    monkeypatch.setitem(docsgen.BLOCKS, "headline", lambda: "NEW")
    text = "intro\n<!-- eebench:headline:start -->\nOLD\n<!-- eebench:headline:end -->\nrest\n"
    assert docsgen.render_readme(text) == "intro\n<!-- eebench:headline:start -->\nNEW\n<!-- eebench:headline:end -->\nrest\n"
    with pytest.raises(KeyError, match="no <!-- eebench:headline:start"):
        docsgen.render_readme("no block here\n")


def test_readme_is_the_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 130
    for command in ("make repro", "make test", "make smoke"):
        assert command in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        assert not target.startswith(("../", "/")), f"README links outside the repository: {target}"
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to a missing file: {target}"


def test_code_citations_of_the_specification_name_existing_sections():
    spec = (ROOT / "docs" / "methods.md").read_text()
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", spec, re.M))
    cited = set()
    for path in [*ROOT.glob("methods/*.py"), *ROOT.glob("bench/**/*.py"), *ROOT.glob("tests/**/*.py")]:
        for ref in re.findall(r"methods\.md §([\d.,\s–§-]+)", path.read_text()):
            cited |= set(re.findall(r"\d+(?:\.\d+)?", ref))
    assert cited, "no citations found: the pattern is wrong"
    assert cited <= headings, f"cited sections missing from docs/methods.md: {sorted(cited - headings)}"


def test_every_docs_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav):
        for entry in nav:
            for value in entry.values():
                yield from pages(value) if isinstance(value, list) else [value]

    listed = set(pages(config["nav"]))
    on_disk = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk | set(docsgen.GENERATED_PAGES) == listed


def test_a_method_without_a_section_runs_with_its_defaults():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["methods"]["sdn"]
    resolved = validate(params)
    assert resolved["methods"]["sdn"] == get_method("sdn").defaults


def test_analyse_reference_defaults_to_the_first_method_and_says_so_when_wrong():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["grid"]["methods"], params["grid"]["extra_seed_methods"] = ["joint", "hard_cgt"], []
    with pytest.raises(BenchError, match=r"analyse.reference = 'branchynet' is not in grid.methods; set it to one of "
                                         r"joint, hard_cgt .* `analyse: \{reference: joint\}` in your profile"):
        validate(params)
    del params["analyse"]["reference"]
    assert validate(params)["analyse"]["reference"] == "joint"


def test_a_study_profile_gets_empty_sections_for_methods_on_defaults(tmp_path):
    from bench.study import profile_params

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "profiles").mkdir()
    profile = tmp_path / "mine.yaml"
    profile.write_text(yaml.safe_dump({"grid": {"methods": ["joint", "sdn"], "extra_seed_methods": []},
                                       "analyse": {"reference": "joint"}}))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["methods"]["sdn"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    merged = profile_params(tmp_path, str(profile))
    assert merged["methods"]["sdn"] == {} and merged["methods"]["joint"] == params["methods"]["joint"]


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the docs extra is not installed (make docs installs it)")
    result = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "method-reference" / "index.html").is_file()
