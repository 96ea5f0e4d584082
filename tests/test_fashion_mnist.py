"""The Fashion-MNIST example: its real data code, training and tune, offline.

The tests write small data sets in the official format (gzipped IDX files with
the official names) and serve them from a loopback HTTP server where a test
needs a download. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import importlib.util
import random
import re
import shutil
import struct
import threading
from pathlib import Path

import pytest
from conftest import REPO, Project, check_report, closed_address, error_lines

# PyTorch lives in .torch/, on the PYTHONPATH of this file's Guild runs only
# (see the README's test command, and tests/requirements.txt for why).
TORCH_DIR = REPO / ".torch"
pytestmark = pytest.mark.skipif(
    not (TORCH_DIR / "torch").is_dir(),
    reason="the example needs PyTorch in .torch/: pip install --no-deps "
    "--target .torch torch",
)
e2e = pytest.mark.e2e  # real `guild` runs (and Ray for the tune)

EXAMPLE = REPO / "examples" / "fashion_mnist"
FILE_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def write_fashion_files(directory: Path, train: int = 600, test: int = 200) -> None:
    """Images in the official IDX layout: each class is a faint bar at its own
    place in noise, so a model learns it, slowly enough that values differ."""
    rng = random.Random(0)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = bytes(rng.randrange(10) for _ in range(count))
        images = bytearray()
        for label in labels:
            image = bytearray(rng.randrange(0, 140) for _ in range(28 * 28))
            top, left = (label // 5) * 14, (label % 5) * 5
            for row in range(top + 2, top + 12):
                for col in range(left + 1, left + 5):
                    image[row * 28 + col] = min(255, image[row * 28 + col] + 90)
            images += image
        with gzip.open(directory / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, count, 28, 28) + bytes(images))
        with gzip.open(directory / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, count) + labels)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fashion-data")
    write_fashion_files(directory)
    return directory


@pytest.fixture
def example(tmp_path: Path, guild_env) -> Project:
    path = tmp_path / "fashion_mnist"
    shutil.copytree(EXAMPLE, path)
    return Project(path, {**guild_env, "PYTHONPATH": str(TORCH_DIR)})


@pytest.fixture
def mirror(data_dir: Path):
    """A loopback HTTP server with the files at its root; yields its URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    def handler(*args, **kwargs):
        return Quiet(*args, directory=str(data_dir), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def fashion_data():
    """The example's data module, imported in this process from its file (once
    guild.model is imported, Guild's path hook claims every directory with a
    guild.yml, the example's too, and a plain import from it fails)."""
    spec = importlib.util.spec_from_file_location(
        "fashion_data", EXAMPLE / "fashion_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@e2e
def test_prepare_offline_says_where_to_put_the_files(example):
    cache = example.home / ".cache" / "fashion-mnist"

    result = example.guild("run", "-y", "prepare", f"mirror=http://{closed_address()}/")

    assert result.returncode != 0
    (line,) = [ln for ln in error_lines(result) if ln.startswith("prepare:")]
    assert "cannot download train-images-idx3-ubyte.gz" in line
    assert "Connection refused" in line
    assert str(cache) in line and all(name in line for name in FILE_NAMES)
    assert not cache.exists() or not any(cache.iterdir()), "nothing partial is kept"


@e2e
def test_prepare_download_rejects_files_that_are_not_the_published_ones(
    example, mirror
):
    cache = example.home / ".cache" / "fashion-mnist"

    result = example.guild("run", "-y", "prepare", f"mirror={mirror}")

    assert result.returncode != 0
    (line,) = [ln for ln in error_lines(result) if ln.startswith("prepare:")]
    assert re.search(r"sent a file whose MD5 is \w+, not the published \w+", line)
    assert list(cache.iterdir()) == [], "a file that fails its MD5 never lands"


def test_download_checks_md5_and_lands_the_file(
    fashion_data, mirror, data_dir, tmp_path, monkeypatch
):
    name = "t10k-labels-idx1-ubyte.gz"
    expected = hashlib.md5((data_dir / name).read_bytes()).hexdigest()
    monkeypatch.setitem(fashion_data.FILES, name, expected)
    target = tmp_path / "cache"

    path = fashion_data.download(name, str(target), mirrors=(mirror,))

    assert Path(path) == target / name
    assert (target / name).read_bytes() == (data_dir / name).read_bytes()
    assert sorted(p.name for p in target.iterdir()) == [name]


@e2e
def test_prepare_checks_a_data_dir_it_is_given(example, data_dir, tmp_path):
    result = example.guild("run", "-y", "prepare", f"data-dir={data_dir}")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Fashion-MNIST in {data_dir}: 600 training and 200 test images" in (
        result.stdout
    )
    assert "is not the published file (MD5 differs)" in result.stdout

    broken = tmp_path / "broken"
    shutil.copytree(data_dir, broken)
    (broken / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08"))
    result = example.guild("run", "-y", "prepare", f"data-dir={broken}")
    assert result.returncode != 0
    assert "t10k-labels-idx1-ubyte.gz is not an IDX file" in result.stderr


@e2e
def test_train_without_data_says_how_to_get_it(example):
    result = example.guild("run", "-y", "train", "epochs=1")

    assert result.returncode != 0
    cache = example.home / ".cache" / "fashion-mnist"
    assert f"train: Fashion-MNIST not found in {cache}" in result.stderr
    assert "run `guild run prepare` to download it" in result.stderr


@e2e
def test_train_then_evaluate_log_scalars_and_share_the_model(example, data_dir):
    train = example.guild("run", "-y", "train", "epochs=2", f"data-dir={data_dir}")
    assert train.returncode == 0, train.stdout + train.stderr
    evaluate = example.guild("run", "-y", "evaluate", f"data-dir={data_dir}")
    assert evaluate.returncode == 0, evaluate.stdout + evaluate.stderr

    (train_run,) = example.runs_of("train")
    (evaluate_run,) = example.runs_of("evaluate")
    model = (Path(train_run.dir) / "model.pt").read_bytes()
    assert (Path(evaluate_run.dir) / "model.pt").read_bytes() == model
    assert train_run.id in str(evaluate_run.get("deps")), "Guild's dependency"
    steps = re.findall(r"^step: (\d+)$", train.stdout, re.M)
    val_accs = [
        float(v) for v in re.findall(r"^val_acc: ([\d.]+)$", train.stdout, re.M)
    ]
    assert steps == ["1", "2"] and len(val_accs) == 2
    assert all(0 <= v <= 1 for v in val_accs)
    (row,) = example.compare("-Fo", "evaluate")
    assert 0.1 < float(row["test_acc"]) <= 1  # better than chance on 10 classes


@e2e
def test_example_tune_prints_progress_and_writes_its_report(example, data_dir):
    """The example's own tune, shortened to 3 trials of 2 epochs."""
    config = example.path / "guild.yml"
    text = config.read_text()
    assert "train:epochs: 6" in text
    config.write_text(text.replace("train:epochs: 6", "train:epochs: 2"))
    example.env["FASHION_MNIST_DIR"] = str(data_dir)

    result = example.tune("max-trials=3", "max-t=2", "scheduler=fifo", "seed=3")

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "3 trials: 3 completed, 0 stopped, 0 failed" in out
    for n in (1, 2, 3):
        assert re.search(rf"^\[\d+:\d\d\] trial {n}/3 started: lr=", out, re.M)
        assert re.search(rf"^\[\d+:\d\d\] trial {n}/3 completed: test_acc=", out, re.M)
    assert re.search(r"1 running, 1/3 done \(1 completed, 0 stopped, 0 failed\)", out)
    assert re.search(r"best test_acc=[\d.]+: trial \d, lr=", out)
    assert re.search(
        r"^  trial  test_acc  lr\s+batch-size\s+dropout\s+hidden", out, re.M
    )
    assert all(len(line) <= 80 for line in out.splitlines()), "80 columns"
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out), "no control characters"

    tune_run = example.tune_run()
    check_report(Path(tune_run.dir), expect_curves=True)
    records = example.compare("-Fo", "trial")
    assert len(records) == 3 and all(0 <= float(r["test_acc"]) <= 1 for r in records)
