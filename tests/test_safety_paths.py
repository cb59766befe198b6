"""Names that become paths are data, removal stays inside the stage's folders, folder swaps survive a kill.

Hostile inputs are built here: method, variant and released names that climb out of outputs/, a
victim file beside the repository, a link pointing out of it, a SIGKILL between the two renames
of a swap, and an output folder with an image deleted behind the manifest's back.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from infra.atomic import OutsideError, aside_path, finish_swap, remove_inside, swap_in
from infra.errors import DataError, ParamsError
from infra.records import AnonymiseSummary
from infra.settings import slug
from pipelines import anonymise, evaluate, report
from pipelines.config import from_mapping
from pipelines.layout import Layout
from tests.helpers import REPO, fake_test_set, params, params_mapping, write_params, write_source

HOSTILE_NAMES = ["../x", "..", ".hidden", "a/b", "Upper", "a..b", "", "../../../victim"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("section", ["methods", "variants", "released"])
def test_names_that_become_paths_are_plain_names(section, name):
    mapping = params_mapping()
    entry = next(iter(mapping[section].values()))
    mapping[section] = {**mapping[section], name: entry}
    with pytest.raises(ParamsError, match=rf"^{section}\.{name.replace('.', '[.]')} must be a plain name"):
        from_mapping(mapping)


def test_plain_names_pass_the_check():
    assert all(slug.test(name) for name in ["blur", "anonygan-68-j5", "ciagan_released", "v1.2", "-x", "0"])
    assert not any(slug.test(name) for name in HOSTILE_NAMES)


def test_an_empty_methods_is_one_line(tmp_path, capsys):
    layout = Layout(tmp_path)
    mapping = params_mapping()
    mapping["methods"] = {}
    write_params(layout, mapping)
    with pytest.raises(SystemExit) as stop:
        report.main([], layout=layout)
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["report: params.yaml methods is empty: the tables need at least "
                                                    "one method"]


def test_removal_refuses_anything_outside_the_layouts_folders(tmp_path):
    layout = Layout(tmp_path / "repo")
    layout.outputs_root.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "inside").mkdir(parents=True)
    (layout.outputs_root / "link").symlink_to(elsewhere)
    for path in [victim, layout.outputs_root / ".." / ".." / "victim", layout.outputs_root,
                 layout.outputs_root / "celeba" / "..", layout.outputs_root / "link" / "inside", layout.root]:
        with pytest.raises(OutsideError, match="refusing to remove"):
            layout.remove(path)
    assert victim.read_text() == "keep me" and (elsewhere / "inside").is_dir()
    layout.remove(layout.outputs_root / "link")  # the link itself goes, never what it points to
    assert not (layout.outputs_root / "link").exists() and (elsewhere / "inside").is_dir()
    with pytest.raises(OutsideError):
        remove_inside(tmp_path / "a", roots=[])


def outputs_of(layout: Layout, dataset: str, method: str) -> dict[str, bytes]:
    out = layout.outputs(dataset, method)  # with the parrot's gallery/ (pipelines.gallery) inside it
    return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}


def test_a_kill_between_the_two_renames_leaves_the_old_folder_whole(tmp_path):
    layout = Layout(tmp_path)
    for dataset in ("celeba", "lfw"):
        fake_test_set(layout, dataset)
    anonymise.run(params(), layout, "original")
    old = outputs_of(layout, "celeba", "original")
    killer = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from pipelines import anonymise
        from pipelines.layout import Layout
        from tests.helpers import params
        rename = os.replace
        def replace(source, target):
            if Path(source).name == ".original.partial":  # the new folder moving in: the old one is aside
                os.kill(os.getpid(), signal.SIGKILL)
            rename(source, target)
        os.replace = replace
        anonymise.run(params(), Layout(Path({str(tmp_path)!r})), "original")
    """)
    killed = subprocess.run([sys.executable, "-c", killer], cwd=REPO, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    out = layout.outputs("celeba", "original")
    assert not out.exists() and aside_path(out).is_dir()  # killed exactly between the renames
    finish_swap(out)  # what the next run does first
    assert outputs_of(layout, "celeba", "original") == old and not aside_path(out).exists()
    anonymise.run(params(), layout, "original")
    assert sorted(path.name for path in out.parent.iterdir()) == ["original"]
    rerun = outputs_of(layout, "celeba", "original")
    del rerun["summary.json"], old["summary.json"]  # which records the run's time
    assert rerun == old


def test_a_kill_after_the_new_folder_moved_in_keeps_the_new_one(tmp_path):
    target, new = tmp_path / "method", tmp_path / ".method.partial"
    for folder, text in ((target, "old"), (new, "new")):
        folder.mkdir()
        (folder / "0.png").write_text(text)
    aside_path(target).mkdir()  # as left by a kill after the second rename: the old folder still aside
    (aside_path(target) / "0.png").write_text("older")
    swap_in(new, target)
    assert (target / "0.png").read_text() == "new" and not aside_path(target).exists() and not new.exists()


def test_evaluate_refuses_an_output_folder_missing_images_of_its_manifest(tmp_path, capsys):
    layout = Layout(tmp_path)
    write_params(layout, params_mapping())
    for dataset in ("celeba", "lfw"):
        fake_test_set(layout, dataset)
        write_source(layout, dataset, tmp_path / "photos")
    anonymise.run(params(), layout, "original")
    images = layout.outputs("celeba", "original")
    summary = AnonymiseSummary.read(images / "summary.json")
    evaluate.check_outputs(images, summary, "crop", "original")  # whole: accepted
    with pytest.raises(DataError, match="holds images in the crop frame but evaluate.lfw_frame is photo"):
        evaluate.check_outputs(images, summary, "photo", "original")  # LFW's frame changed since anonymise
    (images / "0.png").unlink()  # half-deleted behind the manifest's back
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["original"], layout=layout)
    line, = capsys.readouterr().err.splitlines()
    assert stop.value.code == 2
    assert line == (f"evaluate@original: {images}: 0.png is missing although manifest.csv lists it as anonymised: "
                    "the folder is damaged; re-run `dvc repro --force anonymise@original`")
