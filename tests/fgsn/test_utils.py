"""The shared helpers of fgsn.utils: atomic writes, kill-safe HDF5 groups, the metrics CSV of the trainers,
per-key generators, the registry."""
import shutil
import zlib

import numpy as np
import pytest

import h5py

from fgsn.utils.io import H5GroupWriter, atomic_path, write_text_atomic
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


class TestH5GroupWriter:
    def test_pending_until_commit(self, tmp_path):
        out = tmp_path / "l.h5"
        w = H5GroupWriter(out)
        with w.group("a/b.jpg") as g:
            g.create_dataset("labels", data=np.arange(3))
            g.attrs["k"] = 2
        with w.group("c.jpg") as g:
            g.create_dataset("labels", data=np.zeros(2))
        assert not out.exists() and sorted(w.pending()) == ["a/b.jpg", "c.jpg"]
        assert sorted(H5GroupWriter(out).pending()) == ["a/b.jpg", "c.jpg"]  # seen by the next run's writer
        w.commit({"num_classes": 4})
        with h5py.File(out) as f:
            assert f["a/b.jpg/labels"][()].tolist() == [0, 1, 2] and f["a/b.jpg"].attrs["k"] == 2
            assert "c.jpg/labels" in f and f.attrs["num_classes"] == 4
        assert w.pending() == [] and not w.parts_dir.exists()

    def test_replaces_groups_and_keeps_the_others(self, tmp_path):
        out = tmp_path / "l.h5"
        w = H5GroupWriter(out)
        for name, v in (("a", 1), ("b", 2)):
            with w.group(name) as g:
                g.create_dataset("labels", data=[v])
        w.commit()
        with w.group("a") as g:
            g.create_dataset("labels", data=[5])
        with w.group("a") as g:  # a pending group written again replaces the first
            g.create_dataset("labels", data=[7])
        assert w.pending() == ["a"]
        w.commit()
        with h5py.File(out) as f:
            assert f["a/labels"][()].tolist() == [7] and f["b/labels"][()].tolist() == [2]

    def test_failed_group_and_killed_commit_leave_nothing_behind(self, tmp_path):
        out = tmp_path / "l.h5"
        w = H5GroupWriter(out)
        with pytest.raises(RuntimeError):
            with w.group("a") as g:
                g.create_dataset("labels", data=[1])
                raise RuntimeError("bad image")
        assert w.pending() == []
        with w.group("b") as g:
            g.create_dataset("labels", data=[2])
        (tmp_path / "l.h5.tmp").write_bytes(b"partial")  # a commit killed midway
        (w.parts_dir / "0123.h5.tmp").write_bytes(b"partial")  # a group killed midway
        w.commit()
        with h5py.File(out) as f:
            assert list(f) == ["b"]
        assert not list(tmp_path.rglob("*.tmp")) and not w.parts_dir.exists()

    def test_commit_without_changes_leaves_the_file_untouched(self, tmp_path):
        out = tmp_path / "l.h5"
        w = H5GroupWriter(out)
        with w.group("a") as g:
            g.create_dataset("labels", data=[1])
        w.commit({"num_classes": 3})
        mtime = out.stat().st_mtime_ns
        w.commit({"num_classes": 3})
        assert out.stat().st_mtime_ns == mtime
        w.commit({"checkpoint": "x.pt"})
        with h5py.File(out) as f:
            assert f.attrs["checkpoint"] == "x.pt" and f.attrs["num_classes"] == 3 and list(f) == ["a"]


    def test_commits_add_shards_without_rewriting_earlier_data(self, tmp_path):
        """The file holds links; each commit's groups go into a new shard; earlier shards are not rewritten, a shard
        whose groups were all replaced is deleted, the pair (file, shards) moves together, and h5_consolidate
        gives one self-contained file."""
        from fgsn.utils.io import h5_consolidate, h5_group_names

        out = tmp_path / "c" / "feats.h5"
        w = H5GroupWriter(out)
        big = np.arange(200_000, dtype=np.float64)  # 1.6 MB per group
        for name in ("s1/a.jpg", "s1/b.jpg"):
            with w.group(name) as g:
                g.create_dataset("descriptors", data=big)
        w.commit({"num_classes": 2})
        first = w.shards_dir / "000001.h5"
        stamp = (first.stat().st_ino, first.stat().st_mtime_ns)
        with w.group("s2/c.jpg") as g:
            g.create_dataset("descriptors", data=big + 1)
        w.commit()
        assert (first.stat().st_ino, first.stat().st_mtime_ns) == stamp  # not copied again
        assert sorted(p.name for p in w.shards_dir.iterdir()) == ["000001.h5", "000002.h5"]
        assert out.stat().st_size < 100_000  # the index: links and attributes only
        with h5py.File(out) as f:
            assert isinstance(f.get("s1/a.jpg", getlink=True), h5py.ExternalLink)
            np.testing.assert_array_equal(f["s2/c.jpg/descriptors"][()], big + 1)
            assert f.attrs["num_classes"] == 2
        assert h5_group_names(out, "descriptors") == {"s1/a.jpg", "s1/b.jpg", "s2/c.jpg"}
        for name in ("s1/a.jpg", "s1/b.jpg"):  # both groups of the first shard replaced: it is collected
            with w.group(name) as g:
                g.create_dataset("descriptors", data=big * 2)
        w.commit()
        assert sorted(p.name for p in w.shards_dir.iterdir()) == ["000002.h5", "000003.h5"]
        moved = tmp_path / "moved"
        (tmp_path / "c").rename(moved)
        with h5py.File(moved / "feats.h5") as f:
            np.testing.assert_array_equal(f["s1/b.jpg/descriptors"][()], big * 2)
        single = h5_consolidate(moved / "feats.h5", tmp_path / "single.h5")
        shutil.rmtree(moved)
        with h5py.File(single) as f:
            np.testing.assert_array_equal(f["s2/c.jpg/descriptors"][()], big + 1)
            assert f.attrs["num_classes"] == 2 and sorted(f["s1"]) == ["a.jpg", "b.jpg"]

    def test_extends_a_file_of_the_earlier_layout(self, tmp_path):
        """Groups stored in the file itself (written before the shards) stay readable, can be replaced, and are
        listed with the linked ones."""
        from fgsn.utils.io import h5_group_names

        out = tmp_path / "l.h5"
        with h5py.File(out, "w") as f:
            f.create_group("old/a.jpg").create_dataset("labels", data=[1])
            f.create_group("old/b.jpg").create_dataset("labels", data=[2])
        w = H5GroupWriter(out)
        for name, v in (("old/b.jpg", 5), ("new.jpg", 6)):
            with w.group(name) as g:
                g.create_dataset("labels", data=[v])
        w.commit()
        with h5py.File(out) as f:
            assert [f[n]["labels"][0] for n in ("old/a.jpg", "old/b.jpg", "new.jpg")] == [1, 5, 6]
        assert h5_group_names(out, "labels") == {"old/a.jpg", "old/b.jpg", "new.jpg"}


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
