"""``python -m metabook_learn data prepare|info NAME``: output on success, one line on failure."""
from __future__ import annotations

import subprocess
import sys

import pytest

from fixtures_data import write_cifar100_archive, write_mini_imagenet_pickle
from metabook_learn.cli import main

pytestmark = pytest.mark.usefixtures("no_data_environment")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_lists_the_data_sets_and_options():
    result = subprocess.run([sys.executable, "-m", "metabook_learn", "data", "prepare", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for word in ("--cache", "--mirror", "METABOOK_MIRROR", "omniglot-runs", "rotated-mnist", "mini-imagenet", "cifar-fs"):
        assert word in result.stdout


def test_info_omniglot_prints_splits_classes_and_images_per_class(capsys, real_cache, real_mirror):
    code, out, err = run(capsys, "data", "info", "omniglot", "--cache", str(real_cache), "--mirror", str(real_mirror))
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines()[2:]}
    assert rows["background"] == ["964", "20"] and rows["evaluation"] == ["659", "20"]
    assert rows["train"] == ["4400", "20"] and rows["test"] == ["1692", "20"]


def test_prepare_and_info_of_the_one_shot_runs(capsys, real_cache, real_mirror):
    code, out, _ = run(capsys, "data", "prepare", "omniglot-runs", "--cache", str(real_cache),
                       "--mirror", str(real_mirror))
    assert code == 0 and "omniglot-runs is ready" in out
    code, out, _ = run(capsys, "data", "info", "omniglot-runs", "--cache", str(real_cache))
    assert code == 0 and "run20" in out


def test_environment_variables_set_the_folders(capsys, monkeypatch, real_cache, real_mirror):
    monkeypatch.setenv("METABOOK_DATA", str(real_cache))
    monkeypatch.setenv("METABOOK_MIRROR", str(real_mirror))
    code, out, _ = run(capsys, "data", "info", "rotated-mnist")
    assert code == 0 and "75 degrees" in out


def test_prepare_cifar_fs_from_a_mirror(capsys, tmp_path):
    write_cifar100_archive(tmp_path / "mirror" / "cifar-100" / "cifar-100-python.tar.gz")
    code, out, err = run(capsys, "data", "prepare", "cifar-fs", "--cache", str(tmp_path / "c"),
                         "--mirror", str(tmp_path / "mirror"))
    assert code == 0, err
    code, out, _ = run(capsys, "data", "info", "cifar-fs", "--cache", str(tmp_path / "c"))
    assert code == 0 and [line.split()[:3] for line in out.splitlines()[2:]] == [
        ["train", "64", "4"], ["val", "16", "4"], ["test", "20", "4"]]


def test_info_mini_imagenet(capsys, tmp_path):
    folder = tmp_path / "c" / "mini-imagenet"
    for split, count in (("train", 64), ("val", 16), ("test", 20)):
        write_mini_imagenet_pickle(folder, split, count, per_class=1)
    code, out, _ = run(capsys, "data", "info", "mini-imagenet", "--cache", str(tmp_path / "c"))
    assert code == 0 and "val" in out


def test_unknown_data_set_is_one_line(capsys):
    code, _, err = run(capsys, "data", "info", "imagenet")
    assert_one_line_error(code, err, "unknown data set 'imagenet'", "omniglot, omniglot-runs")


def test_missing_data_is_one_actionable_line(capsys, tmp_path):
    code, _, err = run(capsys, "data", "info", "omniglot", "--cache", str(tmp_path / "c"))
    assert_one_line_error(code, err, "images_background.zip", str(tmp_path / "c"), "METABOOK_MIRROR",
                          "python -m metabook_learn data prepare omniglot")
    code, _, err = run(capsys, "data", "prepare", "mini-imagenet", "--cache", str(tmp_path / "c"))
    assert_one_line_error(code, err, "mini-imagenet-cache-train.pkl", "no official download")


def test_failed_download_is_one_line(capsys, tmp_path, monkeypatch):
    from metabook_learn.data import rotated_mnist
    from metabook_learn.data.storage import UpstreamFile

    gone = (tmp_path / "offline" / "t10k-images-idx3-ubyte.gz").as_uri()
    monkeypatch.setitem(rotated_mnist.MNIST_TEST_FILES, "images",
                        UpstreamFile("mnist", "t10k-images-idx3-ubyte.gz", gone, "0" * 32))
    code, _, err = run(capsys, "data", "prepare", "rotated-mnist", "--cache", str(tmp_path / "c"))
    assert_one_line_error(code, err, "t10k-images-idx3-ubyte.gz", "failed", "to provide it")


def test_corrupt_mirror_archive_is_one_line(capsys, tmp_path):
    (tmp_path / "m" / "omniglot").mkdir(parents=True)
    (tmp_path / "m" / "omniglot" / "all_runs.zip").write_bytes(b"PK\x03\x04 truncated")
    code, _, err = run(capsys, "data", "prepare", "omniglot-runs", "--cache", str(tmp_path / "c"),
                       "--mirror", str(tmp_path / "m"))
    assert_one_line_error(code, err, "all_runs.zip is truncated or corrupt")


def test_sinusoid_info_needs_no_data(capsys, tmp_path):
    code, out, _ = run(capsys, "data", "info", "sinusoid", "--cache", str(tmp_path))
    assert code == 0 and "A sin(x - phase)" in out


@pytest.mark.parametrize("argv", [["data"], ["data", "info"]])
def test_missing_arguments_exit_with_usage(argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
