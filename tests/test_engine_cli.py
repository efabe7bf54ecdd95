"""--workers / --scheduler: every command with parallel steps parses them and hands one engine to its main."""
import argparse
from types import SimpleNamespace

import pytest

from evaluation import ablate, cli
from fgsn.utils.parallel import Engine, add_engine_arguments, engine_options

ADDRESS = "tcp://10.0.0.5:8786"  # never contacted: an Engine connects on first use only


@pytest.fixture
def capture(monkeypatch):
    """capture(module, name): replace ``module.name`` by a stub that records its ``engine`` argument."""
    engines = []

    def install(module, name, result=None):
        def stub(*args, engine=None, **kwargs):
            engines.append(engine)
            return result(*args, **kwargs) if callable(result) else result
        monkeypatch.setattr(module, name, stub)
        return engines
    return install


def test_engine_options():
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    assert engine_options(parser.parse_args([])) == {}
    assert engine_options(parser.parse_args(["--workers", "3", "--scheduler", ADDRESS])) == {
        "workers": 3, "scheduler": ADDRESS}


def test_label_map_cli(tmp_path, monkeypatch, capture):
    from reconstruction import datasets, label_map

    monkeypatch.setattr(datasets, "load_dataset", lambda *a: None)
    engines = capture(label_map, "label_dataset", {})
    cli.main(["label-map", "--dataset", "cmu", "--root", str(tmp_path), "--out", str(tmp_path / "out"),
              "--workers", "2"])
    (engine,) = engines
    assert isinstance(engine, Engine) and engine.workers == 2 and engine.scheduler is None and engine.parallel


def test_segment_cli(tmp_path, capture):
    from fgsn import segment

    engines = capture(segment, "main", tmp_path / "labels.h5")
    cli.main(["segment", "--checkpoint", "c.pt", "--images", str(tmp_path), "--out", str(tmp_path / "labels.h5"),
              "--scheduler", ADDRESS])
    (engine,) = engines
    assert isinstance(engine, Engine) and engine.scheduler == ADDRESS


def test_ablate_runs_share_one_engine(tmp_path, monkeypatch, capture):
    """The baseline and every (network, method) run get the same engine, made from --workers."""
    config = tmp_path / "ablate.yaml"
    config.write_text(f"root: {tmp_path}\nmethods: [ssmc, gsmc]\nnetworks:\n"
                      "  - {name: a, labels: a.h5}\n  - {name: b, labels: b.h5}\n")
    monkeypatch.setattr(ablate, "load_dataset", lambda *a: SimpleNamespace(queries=[]))
    monkeypatch.setattr(ablate, "read_results", lambda path: {})
    monkeypatch.setattr(ablate.evaluate, "main", lambda *a: {"groups": {}, "conditions": {}, "all": {"recall": [0, 0, 0]}})
    confs = []
    engines = capture(ablate.localize, "main", lambda conf, *a, **k: confs.append(conf))
    cli.main(["ablate", str(config), "--out", str(tmp_path / "out"), "--workers", "2"])
    assert len(engines) == 5 and all(e is engines[0] for e in engines)  # p3p + 2 networks x 2 methods
    assert isinstance(engines[0], Engine) and engines[0].workers == 2
    assert all(c.workers == 2 and c.scheduler is None for c in confs)
