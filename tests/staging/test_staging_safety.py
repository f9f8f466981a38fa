"""Staging never touches user files (issue 14): the dest view, symlinks in a source, permissions,
and one-line errors (exit 1, nothing lost) for ENOSPC, bad numbers, a dest that is a file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from staging_helpers import REPO, incomplete_files, run_staging, snapshot, write_coco

from staging.view import VIEW_MARKER, views_dir


def _tree(root: Path) -> dict[str, bytes | str]:
    """Every entry below ``root``: file bytes, or a symlink's target (what "untouched" means)."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = (
            f"-> {os.readlink(p)}" if p.is_symlink() else p.read_bytes() if p.is_file() else ""
        )
    return out


def _one_line_error(done: subprocess.CompletedProcess, expect: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert expect in lines[0], lines[0]
    return lines[0]


def _stage(source, cache, dest, *extra, env=None) -> subprocess.CompletedProcess:
    return run_staging("--source", str(source), "--cache", str(cache), "--dest", str(dest),
                       *extra, env=env)  # fmt: skip


@pytest.fixture
def src(tmp_path) -> Path:
    return write_coco(tmp_path / "src")


@pytest.mark.parametrize(
    ("dest", "expect"),
    [
        ("src", "is the same folder as data.source"),
        ("src/view", "lies inside data.source"),
        (".", "contains data.source"),
        ("cache", "is the same folder as data.cache"),
        ("cache/view", "lies inside data.cache"),
    ],
)
def test_dest_overlapping_source_or_cache_is_refused(tmp_path, src, dest, expect):
    before = _tree(src)
    done = _stage(src, tmp_path / "cache", tmp_path / dest)
    _one_line_error(done, expect)
    assert _tree(src) == before
    assert not (tmp_path / "cache").exists()  # refused before anything was written


def test_users_existing_folder_is_never_adopted_or_deleted(tmp_path, src):
    """The issue's data loss: a dest holding the user's own annotations and train2017/."""
    mine = write_coco(tmp_path / "mine", n_images=2)
    before = _tree(mine)
    for extra in ((), ("--with-images",), ()):
        done = _stage(src, tmp_path / "cache", mine, *extra)
        _one_line_error(done, "is an existing folder that staging did not make")
    assert _tree(mine) == before


def test_dest_that_is_a_file_or_foreign_symlink_is_refused(tmp_path, src):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    _one_line_error(_stage(src, tmp_path / "cache", afile), f"data.dest {afile} is a file")
    assert afile.read_text() == "mine"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "mine-elsewhere")
    _one_line_error(_stage(src, tmp_path / "cache", link), "symlink to")
    assert os.readlink(link) == str(tmp_path / "mine-elsewhere")
    under_file = afile / "view"
    _one_line_error(_stage(src, tmp_path / "cache", under_file), "cannot build the data.dest view")
    assert afile.read_text() == "mine"


def test_empty_folder_is_taken_and_views_switch_atomically(tmp_path, src):
    dest = tmp_path / "dest"
    dest.mkdir()  # an empty folder holds nothing to lose
    assert _stage(src, tmp_path / "cache", dest).returncode == 0
    first = Path(os.path.realpath(dest))
    assert dest.is_symlink() and first.parent == views_dir(dest) and (first / VIEW_MARKER).exists()
    assert _stage(src, tmp_path / "cache", dest).returncode == 0
    assert Path(os.path.realpath(dest)) == first  # unchanged view: not rebuilt
    assert _stage(src, tmp_path / "cache", dest, "--subset", "1").returncode == 0
    second = Path(os.path.realpath(dest))
    assert second != first and first.exists()  # the replaced view stays for readers inside it
    assert len(json.loads((dest / "annotations/instances_val2017.json").read_text())["images"]) == 1
    assert _stage(src, tmp_path / "cache", dest, "--with-images").returncode == 0
    assert not first.exists() and second.exists()  # older views are pruned
    assert sorted(os.listdir(dest / "val2017")) == sorted(os.listdir(src / "val2017"))
    assert incomplete_files(tmp_path) == []


def test_concurrent_stagers_of_one_dest_leave_one_complete_view(tmp_path, src):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "staging", "--quiet", "--source", str(src),
           "--cache", str(tmp_path / "cache"), "--dest", str(tmp_path / "dest")]  # fmt: skip
    procs = [
        subprocess.Popen(
            [*cmd, "--subset", str(1 + i % 3)],
            cwd=REPO,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(6)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [o[1][-300:] for o in outs]
    view = Path(os.path.realpath(tmp_path / "dest"))
    assert (view / VIEW_MARKER).exists()
    for split in ("train", "val"):
        doc = json.loads((view / f"annotations/instances_{split}2017.json").read_text())
        assert 1 <= len(doc["images"]) <= 3
    assert incomplete_files(tmp_path) == []


def test_symlink_leading_out_of_the_source_is_refused(tmp_path, src):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the cache")
    (src / "val2017" / "000000000002.jpg").unlink()
    (src / "val2017" / "000000000002.jpg").symlink_to(secret)
    done = _stage(src, tmp_path / "cache", tmp_path / "dest", "--with-images")
    line = _one_line_error(done, "val2017/000000000002.jpg is a symlink to")
    assert str(secret) in line and "outside data.source" in line
    assert not any(b"not for the cache" in v for v in snapshot(tmp_path / "cache").values())
    assert not (tmp_path / "dest").exists()


def test_image_folder_linked_out_of_the_source_is_refused(tmp_path, src):
    elsewhere = tmp_path / "elsewhere"
    (src / "train2017").rename(elsewhere)
    (src / "train2017").symlink_to(elsewhere)
    done = _stage(src, tmp_path / "cache", tmp_path / "dest")
    _one_line_error(done, "train2017 is a symlink to")


def test_symlink_inside_the_source_is_followed(tmp_path, src):
    (src / "extra").mkdir()
    img = src / "val2017" / "000000000001.jpg"
    img.rename(src / "extra" / img.name)
    img.symlink_to(Path("..") / "extra" / img.name)
    done = _stage(src, tmp_path / "cache", tmp_path / "dest", "--with-images")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "dest" / "val2017" / img.name).read_bytes() == img.read_bytes()


def test_cached_files_are_never_more_readable_than_the_source(tmp_path, src):
    (src / "annotations" / "instances_val2017.json").chmod(0o600)
    (src / "annotations" / "instances_train2017.json").chmod(0o644)
    done = _stage(src, tmp_path / "cache", tmp_path / "dest")
    assert done.returncode == 0, done.stderr
    for split, mode in (("val", 0o400), ("train", 0o444)):  # read-only, no wider than the source
        cached = next((tmp_path / "cache").rglob(f"*-instances_{split}2017.json"))
        assert stat.S_IMODE(cached.stat().st_mode) == mode


@pytest.mark.parametrize("option", ["--subset", "--seed", "--workers"])
def test_non_numeric_option_is_one_line(tmp_path, src, option):
    done = _stage(src, tmp_path / "cache", tmp_path / "dest", option, "abc")
    _one_line_error(done, f"{option} 'abc' is not a whole number")
    assert not (tmp_path / "cache").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MB tmpfs (needs root, as on this project's machines and CI)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_while_writing_a_subset_is_one_line(tmp_path, src, small_disk):
    cache = small_disk / "cache"
    env = {"STAGING_RESERVE_BYTES": "0"}
    assert _stage(src, cache, tmp_path / "dest0", env=env).returncode == 0
    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last byte
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    before = snapshot(cache)
    done = _stage(src, cache, tmp_path / "dest", "--subset", "2", env=env)
    line = _one_line_error(done, "No space left on device")
    assert line.startswith("error: cannot write ") and "instances_" in line  # the subset JSON
    (small_disk / "filler").unlink()
    assert snapshot(cache) == before and incomplete_files(cache) == []
    assert not (tmp_path / "dest").exists()


def test_task_subset_abc_is_one_line(tmp_path, src, monkeypatch):
    from invoke import Exit, MockContext

    monkeypatch.syspath_prepend(str(REPO))
    import tasks

    with pytest.raises(Exit) as exc:
        tasks.stage_coco(MockContext(), source=str(src), cache=str(tmp_path / "c"),
                         dest=str(tmp_path / "d"), subset="abc")  # fmt: skip
    assert exc.value.code == 1 and "\n" not in exc.value.message
    assert "--subset 'abc' is not a whole number" in exc.value.message


def test_view_made_by_an_older_staging_is_replaced(tmp_path, src):
    """Before views were switched in, dest was a real folder of links into the cache: proven by
    the shared inode, it is retired into the views folder (a look-alike copy is refused)."""
    cache = tmp_path / "cache"
    assert _stage(src, cache, tmp_path / "new", "--splits", "val").returncode == 0
    old = tmp_path / "old"
    (old / "annotations").mkdir(parents=True)
    staged = os.path.realpath(tmp_path / "new" / "annotations" / "instances_val2017.json")
    os.link(staged, old / "annotations" / "instances_val2017.json")
    (old / "val2017").symlink_to(src / "val2017")
    done = _stage(src, cache, old, "--splits", "val")
    assert done.returncode == 0, done.stderr
    assert old.is_symlink() and (old / VIEW_MARKER).exists()
    assert (old / "annotations" / "instances_val2017.json").read_bytes() == Path(
        staged
    ).read_bytes()
    lookalike = tmp_path / "lookalike"
    (lookalike / "annotations").mkdir(parents=True)
    (lookalike / "annotations" / "instances_val2017.json").write_bytes(Path(staged).read_bytes())
    _one_line_error(_stage(src, cache, lookalike, "--splits", "val"), "did not make")
    assert (lookalike / "annotations" / "instances_val2017.json").exists()
