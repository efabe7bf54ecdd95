"""The shared helpers of fgsn.utils: atomic writes, the metrics CSV of the trainers, per-key generators, the
registry."""
import zlib

import numpy as np
import pytest

from fgsn.utils.io import atomic_path, write_text_atomic
from fgsn.utils.logging import MetricsCSV
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


class TestMetricsCSV:
    def test_rows_and_header(self, tmp_path):
        log = MetricsCSV(tmp_path / "m.csv", ["iteration", "loss"])
        assert (tmp_path / "m.csv").read_text() == "iteration,loss\n" and log.rows == 0
        log.write({"iteration": 1, "loss": 0.5, "extra": 3})
        log.write({"iteration": 2})
        assert (tmp_path / "m.csv").read_text() == "iteration,loss\n1,0.5\n2,\n" and log.rows == 2
        again = MetricsCSV(tmp_path / "m.csv", ["other"])  # an existing file keeps its header and rows
        assert again.fields == ["iteration", "loss"] and again.rows == 2

    def test_fields_from_first_row(self, tmp_path):
        log = MetricsCSV(tmp_path / "m.csv")
        assert not (tmp_path / "m.csv").exists()
        log.write({"b": 1, "a": 2})
        log.write({"a": 4, "b": 3})
        assert (tmp_path / "m.csv").read_text() == "b,a\n1,2\n3,4\n"

    def test_truncate_to_checkpoint_drops_later_and_cut_rows(self, tmp_path):
        p = tmp_path / "m.csv"
        p.write_text("it\n1\n2\n3\n4")  # the last line cut by a kill
        log = MetricsCSV(p)
        assert log.rows == 3
        assert log.truncate(2) == 1 and p.read_text() == "it\n1\n2\n" and log.rows == 2
        log.write({"it": 3})
        assert p.read_text() == "it\n1\n2\n3\n"
        assert log.truncate(5) == 0 and p.read_text() == "it\n1\n2\n3\n"
        assert log.truncate(0) == 3 and p.read_text() == "it\n" and not list(tmp_path.glob("*.tmp"))


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
