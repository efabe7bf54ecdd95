"""User errors at the command line: one line on stderr, exit status 2, nothing left behind; bugs keep their
traceback; a programming error in a localizer stops the run instead of becoming a failed query."""
import pytest

from evaluation import cli
from fgsn.utils.config import merge_config
from fgsn.utils.errors import ConfigError
from localization.base import Localizer, QueryResult


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


def test_missing_root_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["localize", "--dataset", "cmu", "--root", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = _err(capsys)
    assert err.startswith("error: ") and "\n" not in err and "nope" in err and "Traceback" not in err
    assert not out.exists()  # failed before any work: no output folder


def test_unknown_key_and_bad_override(tmp_path, capsys):
    args = ["localize", "--dataset", "cmu", "--root", str(tmp_path), "--out", str(tmp_path / "o")]
    assert cli.main([*args, "localizer.ransac.num_iteratons=5"]) == 2
    assert "num_iteratons" in _err(capsys)
    assert cli.main([*args, "noequals"]) == 2
    assert "key=value" in _err(capsys)
    with pytest.raises(ConfigError, match="nope.yaml"):
        merge_config({"a": 1}, yaml_path=tmp_path / "nope.yaml")


def test_debug_shows_the_traceback(tmp_path):
    from reconstruction.records import DatasetError

    with pytest.raises(DatasetError):
        cli.main(["localize", "--dataset", "cmu", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                  "--debug"])


def test_programming_error_stops_the_run(monkeypatch):
    """_run_one turns data errors into failed results, never a bug (here a KeyError) into one."""
    from localization import localize
    from reconstruction.records import DatasetError, ImageRecord

    q = ImageRecord("q.jpg", "query/q.jpg", None, None, "c0", "snow", ("urban",), 0.0, "slice2")

    class Broken(Localizer):
        def __init__(self, error):
            self.error = error

        def localize(self, query, rng):
            raise self.error

    failed = localize._run_one(Broken(DatasetError("query/q.jpg: truncated")), q, 0)
    assert not failed.success and "truncated" in failed.info["reason"]
    with pytest.raises(KeyError):
        localize._run_one(Broken(KeyError("a bug")), q, 0)


class _AlwaysFails(Localizer):
    """Stand-in method: every query fails with the same reason."""

    def localize(self, query, rng):
        return QueryResult(query.name, False, info={"reason": "too dark"})


def test_all_failed_run_exits_nonzero(semantic_demo, tmp_path, monkeypatch, caplog):
    from localization import localize

    monkeypatch.setitem(localize.METHODS, "test-always-fails", f"{__name__}:_AlwaysFails")
    data, _, _ = semantic_demo
    out = tmp_path / "run"
    assert cli.main(["localize", "--dataset", "cmu", "--root", str(data), "--method", "test-always-fails",
                     "--out", str(out)]) == 1
    assert "No query was localized" in (out / "log.txt").read_text() and "8 x too dark" in (out / "log.txt").read_text()
