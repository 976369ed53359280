"""The operator-data cache (`problems/operator.py`) on a tiny fake problem: generated once and
then loaded, corrupted and truncated files detected and regenerated, the key's dependencies,
split independence, `data:` table validation, and refusal of bad generated data."""

from __future__ import annotations

import logging
import zipfile

import numpy as np
import pytest

from problems.base import ConfigError, OperatorData
from problems.capabilities import data_scale
from problems.operator import OperatorProblem, check_sizes

SIZES = {
    "smoke": {"train": 3, "val": 2, "test": 2},
    "standard": {"train": 5, "val": 2, "test": 4},
    "paper": {"train": 7, "val": 2, "test": 4},
}


class FakeOp(OperatorProblem):
    """u(x, t) = a u0(x) e^{-t}: random u0 per sample; `label` does not enter the data."""

    name = "fake_op"
    axes = ("x", "t")
    fields = ("u",)
    data_keys = ("a", "n")  # `n` (a grid size) is also a key name inside data_key

    def __init__(self, a=1.0, n=8, label="x", data=None, data_seed=0, poison=None):
        super().__init__(
            a=a, n=n, label=label, data=check_sizes(data or SIZES), data_seed=data_seed
        )
        self.poison = poison
        self.calls: list[tuple[str, int, int]] = []

    def generate(self, split, n, seed, progress=None, scale=""):
        self.calls.append((split, n, seed))
        rng = np.random.default_rng(seed)
        u0 = rng.normal(size=(n, 1, self.params["n"]))
        times = np.linspace(0.0, 1.0, 3)
        out = self.params["a"] * u0[:, None] * np.exp(-times)[None, :, None, None]
        if self.poison == "nan":
            out[-1, -1, 0, 0] = np.nan
        if self.poison == "shape":
            out = out[:, :, :, :-1]
        if progress is not None:
            progress(n, n)
        grid = (np.arange(self.params["n"]) / self.params["n"],)
        return OperatorData(u0, out, grid, times, {})


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))
    return tmp_path


def only_file(tmp_path, split="train"):
    files = sorted(tmp_path.glob(f"op-fake_op-{split}-*.npz"))
    assert len(files) == 1, files
    return files[0]


def test_generated_once_then_loaded(tmp_path):
    p = FakeOp()
    ticks = []
    first = p.operator_data("train", "smoke", progress=lambda d, t: ticks.append((d, t)))
    assert p.calls == [("train", 3, 0)] and ticks == [(3, 3)]
    assert first.meta["cached"] is False and first.meta["seconds"] >= 0
    assert first.outputs.dtype == np.float32 and first.times.dtype == np.float64
    again = p.operator_data("train", "smoke")
    fresh = FakeOp().operator_data("train", "smoke")  # a new instance reads the disk cache
    assert len(p.calls) == 1
    for d in (again, fresh):
        assert d.meta["cached"] is True
        assert d.meta["seconds"] == first.meta["seconds"]  # the data's cost, also when loaded
        np.testing.assert_array_equal(d.outputs, first.outputs)
        np.testing.assert_array_equal(d.inputs, first.inputs)
        np.testing.assert_array_equal(d.grid[0], first.grid[0])
    only_file(tmp_path)


def flip_at(path, marker: bytes, offset: int = 0) -> None:
    """Flip 8 bytes of `path` from `offset` past the first occurrence of `marker`."""
    raw = bytearray(path.read_bytes())
    i = raw.find(marker)
    assert i >= 0, marker
    i += offset
    raw[i : i + 8] = bytes(b ^ 0xFF for b in raw[i : i + 8])
    path.write_bytes(bytes(raw))


def flip_in_outputs(path) -> None:
    """Inside the payload of the outputs array (located by its last float32 values, which no
    other array holds)."""
    with np.load(path) as z:
        payload = z["outputs"].tobytes()
    flip_at(path, payload[-16:])


@pytest.mark.parametrize(
    "damage",
    [
        flip_in_outputs,
        lambda f: flip_at(f, '"checksum": "'.encode("utf-32-le"), 80),  # the recorded sum
        lambda f: flip_at(f, b"PK\x01\x02", 4),  # the zip's central directory
        lambda f: f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2]),  # truncated
        lambda f: f.write_bytes(f.read_bytes()[:-30]),  # the end cut off
        lambda f: f.write_bytes(b""),  # empty
    ],
    ids=["array", "checksum", "directory", "truncated", "end-cut", "empty"],
)
def test_damaged_file_is_detected_and_regenerated(tmp_path, caplog, damage):
    p = FakeOp()
    good = p.operator_data("train", "smoke")
    damage(only_file(tmp_path))
    with caplog.at_level(logging.WARNING, logger="problems.operator"):
        again = p.operator_data("train", "smoke")
    assert len(p.calls) == 2 and again.meta["cached"] is False
    assert "unusable" in caplog.text
    np.testing.assert_array_equal(again.outputs, good.outputs)
    assert p.operator_data("train", "smoke").meta["cached"] is True  # repaired on disk
    assert len(p.calls) == 2


def test_consistent_zip_with_altered_values_fails_the_checksum(tmp_path):
    """A well-formed file whose arrays no longer match their recorded checksum."""
    p = FakeOp()
    p.operator_data("train", "smoke")
    path = only_file(tmp_path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["outputs"] = arrays["outputs"].copy()
    arrays["outputs"][0, 0, 0, 0] += 1.0
    np.savez(path, **arrays)
    assert zipfile.is_zipfile(path)
    again = p.operator_data("train", "smoke")
    assert len(p.calls) == 2 and again.meta["cached"] is False


def test_key_depends_on_what_determines_the_data():
    base = FakeOp()
    key = base.data_key("train", 3)
    assert base.data_key("train", 3) == key
    assert FakeOp(label="other").data_key("train", 3) == key  # not a data key
    changed = {
        "param a": FakeOp(a=2.0).data_key("train", 3),
        "param n (shadows the size's name)": FakeOp(n=16).data_key("train", 3),
        "size": base.data_key("train", 4),
        "split": base.data_key("val", 3),
        "seed": FakeOp(data_seed=1).data_key("train", 3),
    }
    bumped = FakeOp()
    bumped.data_version = 2
    changed["version"] = bumped.data_key("train", 3)
    assert all(v != key for v in changed.values()), changed
    assert len(set(changed.values())) == len(changed)


def test_test_split_does_not_depend_on_the_train_size():
    small = FakeOp(data={**SIZES, "smoke": {"train": 3, "val": 2, "test": 2}})
    large = FakeOp(data={**SIZES, "smoke": {"train": 50, "val": 2, "test": 2}})
    a, b = small.operator_data("test", "smoke"), large.operator_data("test", "smoke")
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert small.calls == [("test", 2, 2)] and large.calls == []  # the same cached file
    train = small.operator_data("train", "smoke").outputs
    assert not np.array_equal(train[:2], a.outputs)  # an independent draw


def test_scales_pick_sizes_and_unknown_names_are_refused():
    p = FakeOp()
    assert len(p.operator_data("val", "standard").outputs) == 2
    assert len(p.operator_data("train", "paper").outputs) == 7
    assert data_scale("smoke") == "smoke" and data_scale("my_budget") == "standard"
    with pytest.raises(ConfigError, match="split"):
        p.operator_data("holdout", "smoke")
    with pytest.raises(ConfigError, match="scale"):
        p.operator_data("train", "huge")


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ([1, 2, 3], "data must map"),
        ({"standard": SIZES["standard"], "paper": SIZES["paper"]}, r"data\.smoke"),
        ({**SIZES, "smoke": {"train": 1, "val": 1}}, r"data\.smoke"),
        ({**SIZES, "smoke": {"train": 1, "val": 1, "test": 1, "extra": 1}}, r"data\.smoke"),
        ({**SIZES, "paper": {"train": 0, "val": 1, "test": 1}}, r"data\.paper\.train"),
        ({**SIZES, "paper": {"train": 2.5, "val": 1, "test": 1}}, r"data\.paper\.train"),
        ({**SIZES, "paper": {"train": True, "val": 1, "test": 1}}, r"data\.paper\.train"),
        ({**SIZES, "huge": {"train": 1, "val": 1, "test": 1}}, "unknown scale"),
    ],
)
def test_bad_data_tables_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key):
        check_sizes(data)
    with pytest.raises(ConfigError, match=key):
        FakeOp(data=data)


@pytest.mark.parametrize(("poison", "match"), [("nan", "non-finite"), ("shape", "grid")])
def test_bad_generated_data_raise_and_are_not_cached(tmp_path, poison, match):
    p = FakeOp(poison=poison)
    with pytest.raises(ValueError, match=match):
        p.operator_data("train", "smoke")
    assert not list(tmp_path.glob("op-*"))
    assert FakeOp().operator_data("train", "smoke").meta["cached"] is False


def test_capabilities_of_an_operator_only_problem():
    p = FakeOp()
    assert p.capabilities == {"operator_data"}  # no `solve`, no residual task
    with pytest.raises(NotImplementedError):
        p.reference()
