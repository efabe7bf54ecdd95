"""The shared helpers of fgsn.utils: atomic writes, per-key generators, the registry."""
import zlib

import numpy as np
import pytest

from fgsn.utils.io import atomic_path, write_text_atomic
from fgsn.utils.registry import import_object, lookup
from fgsn.utils.seeding import keyed_rng


class TestAtomicPath:
    def test_replaces_on_success(self, tmp_path):
        p = tmp_path / "a.txt"
        p.write_text("old")
        with atomic_path(p) as tmp:
            assert tmp != p and tmp.parent == p.parent
            tmp.write_text("new")
            assert p.read_text() == "old"  # untouched until the block ends
        assert p.read_text() == "new" and not tmp.exists()

    def test_error_keeps_old_file_and_removes_temporary(self, tmp_path):
        p = tmp_path / "a.txt"
        p.write_text("old")
        with pytest.raises(RuntimeError):
            with atomic_path(p) as tmp:
                tmp.write_text("partial")
                raise RuntimeError("killed")
        assert p.read_text() == "old" and not tmp.exists()

    def test_write_text(self, tmp_path):
        assert write_text_atomic(tmp_path / "b.json", "{}").read_text() == "{}"


def test_keyed_rng_known_stream():
    a = keyed_rng(3, "slice2/query/img_00001_c0_1.jpg").random(4)
    b = np.random.default_rng([3, zlib.crc32(b"slice2/query/img_00001_c0_1.jpg")]).random(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, keyed_rng(3, "slice2/query/img_00002_c0_1.jpg").random(4))
    assert not np.array_equal(a, keyed_rng(4, "slice2/query/img_00001_c0_1.jpg").random(4))


class TestRegistry:
    def test_import_object(self):
        assert import_object("fgsn.utils.seeding:keyed_rng") is keyed_rng
        assert import_object("fgsn.utils.seeding").keyed_rng is keyed_rng
        assert import_object(".seeding:keyed_rng", package="fgsn.utils") is keyed_rng

    def test_missing_attribute_names_spec(self):
        with pytest.raises(ImportError, match="fgsn.utils.seeding:nope"):
            import_object("fgsn.utils.seeding:nope")

    def test_lookup_unknown_lists_known(self):
        reg = {"a": "fgsn.utils.seeding:keyed_rng"}
        assert lookup(reg, "a") is keyed_rng
        with pytest.raises(ValueError, match="unknown method 'b'; choose one of a"):
            lookup(reg, "b", "method")


def test_eta_and_durations():
    from fgsn.utils.logging import eta, format_duration

    assert format_duration(5.4) == "5 s" and format_duration(65) == "1 m 05 s" and format_duration(3725) == "1 h 02 m"
    assert eta(10.0, 5, 500) == "2.00 s/it, ETA 16 m 30 s"  # 2 s per step, 495 steps left
    assert eta(0.0, 0, 10) == "0.00 s/it, ETA 0 s"


def test_progress_logs_when_not_on_a_terminal(caplog):
    """Off a terminal (log files, cluster jobs) progress is log lines with the count, the share and an ETA, and a
    last line with the total time; every item is passed through once, in order."""
    import logging

    from fgsn.utils.logging import progress

    log = logging.getLogger("test_progress")
    with caplog.at_level(logging.INFO, logger="test_progress"):
        items = list(progress(iter(range(4)), total=4, desc="SIFT", unit="img", log=log, interval_s=0.0, tty=False))
    assert items == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records if r.name == "test_progress"]
    assert lines[0].startswith("SIFT: 1 / 4 img (25 %), ") and "ETA" in lines[0]
    assert lines[-1].startswith("SIFT: 4 / 4 img (100 %), ") and lines[-1].endswith(" in all")
    assert len(lines) == 5  # one per item, and the final one
    with caplog.at_level(logging.INFO, logger="test_progress"):
        assert list(progress([], desc="none", log=log, tty=False)) == []  # nothing done: no line
    assert len([r for r in caplog.records if r.name == "test_progress"]) == 5
