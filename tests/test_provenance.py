"""Provenance: the commit and the hash of uncommitted changes, and `make repro`'s refusal of a dirty tree,
checked in a throwaway git repository."""

import hashlib
import subprocess

import pytest

from bench.errors import BenchError
from bench.provenance import check_clean, diff_sha256, git_state


def git(root, *args):
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True).stdout


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "bench").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "bench" / "a.py").write_text("x = 1\n")
    (root / "docs" / "notes.md").write_text("notes\n")
    (root / "params.yaml").write_text("grid: {}\n")
    (root / ".gitignore").write_text("results/\n")
    git(root, "init", "-q")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    return root


def test_clean_tree_records_the_bare_commit(repo):
    head = git(repo, "rev-parse", "HEAD").decode().strip()
    assert git_state(repo) == {"git_commit": head, "git_diff_sha256": None}
    assert "committed" in check_clean(repo)


def test_not_a_repository_is_unknown(tmp_path):
    assert git_state(tmp_path) == {"git_commit": "unknown", "git_diff_sha256": None}


def test_diff_hash_is_the_tracked_diff_plus_untracked_content(repo):
    (repo / "bench" / "a.py").write_text("x = 2\n")
    (repo / "bench" / "new.py").write_text("y = 3\n")
    (repo / "results").mkdir()
    (repo / "results" / "ignored.csv").write_text("ignored, not hashed\n")
    expected = hashlib.sha256()
    expected.update(git(repo, "diff", "HEAD", "--binary", "--no-renames", "--no-color", "--no-ext-diff"))
    expected.update(b"\0untracked\0bench/new.py\0y = 3\n")
    state = git_state(repo / "bench")  # from a subfolder: the whole repository still counts
    assert state["git_commit"].endswith("-dirty")
    assert state["git_diff_sha256"] == expected.hexdigest()


def test_diff_hash_tells_different_changes_apart_and_ignores_ignored_files(repo):
    (repo / "bench" / "a.py").write_text("x = 2\n")
    first = diff_sha256(repo)
    (repo / "results").mkdir()
    (repo / "results" / "out.csv").write_text("ignored\n")
    assert diff_sha256(repo) == first
    (repo / "bench" / "a.py").write_text("x = 3\n")
    assert diff_sha256(repo) not in (first, None)
    git(repo, "add", "bench/a.py")  # staged changes still count: the diff is against HEAD
    assert diff_sha256(repo) is not None
    (repo / "bench" / "a.py").write_text("x = 1\n")
    git(repo, "add", "bench/a.py")
    assert diff_sha256(repo) is None


@pytest.mark.parametrize("change", ["modify", "untracked", "staged", "delete", "params"])
def test_check_clean_refuses_changes_to_result_shaping_code(repo, change):
    if change == "modify":
        (repo / "bench" / "a.py").write_text("x = 2\n")
    elif change == "untracked":
        (repo / "bench" / "b.py").write_text("")
    elif change == "staged":
        (repo / "bench" / "a.py").write_text("x = 2\n")
        git(repo, "add", "bench/a.py")
    elif change == "delete":
        (repo / "bench" / "a.py").unlink()
    else:
        (repo / "params.yaml").write_text("grid: {seeds: [1]}\n")
    with pytest.raises(BenchError, match=r"^uncommitted changes in code that shapes results \(.*\); commit .*"
                                         r"ALLOW_DIRTY=1") as info:
        check_clean(repo)
    assert "\n" not in str(info.value)
    line = check_clean(repo, allow_dirty=True)
    assert line.startswith("warning:") and diff_sha256(repo) in line


def test_changes_outside_result_shaping_code_are_neither_refused_nor_recorded_as_dirty(repo):
    """The default study's runs all recorded `-dirty` because `dvc repro` rewrites the tracked dvc.lock after every
    stage: a change outside the result-shaping paths must leave the bare commit, while one inside still counts."""
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", "dvc.lock")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "lock")
    head = git(repo, "rev-parse", "HEAD").decode().strip()
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {train: {}}\n")  # what dvc repro does mid-study
    (repo / "docs" / "notes.md").write_text("more notes\n")
    (repo / "docs" / "new.md").write_text("new\n")
    (repo / "results").mkdir()
    (repo / "results" / "x.csv").write_text("ignored\n")
    assert "committed" in check_clean(repo)
    assert git_state(repo) == {"git_commit": head, "git_diff_sha256": None}
    (repo / "bench" / "a.py").write_text("x = 2\n")
    only_code = diff_sha256(repo)
    assert git_state(repo) == {"git_commit": head + "-dirty", "git_diff_sha256": only_code}
    (repo / "docs" / "notes.md").write_text("other notes\n")  # the hash covers result-shaping code only
    assert diff_sha256(repo) == only_code


def test_check_clean_names_a_few_files_and_counts_the_rest(repo):
    for i in range(5):
        (repo / "bench" / f"m{i}.py").write_text("")
    with pytest.raises(BenchError, match=r"\(bench/m0.py, bench/m1.py, bench/m2.py and 2 more\)"):
        check_clean(repo)
