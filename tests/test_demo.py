"""``fgsn-loc demo`` end to end on a tiny configuration: generate -> build-map -> train a small FGSN -> P3P, SSMC,
GSMC and PFSL -> evaluate -> table and figures; then a rerun resumes everything."""
import json

from evaluation import demo
from fgsn.utils.config import merge_config

TINY = ["data.trajectory.n_database=14", "data.trajectory.n_queries=4", "data.conditions=[dusk,night]",
        "data.correspondence.n_pairs=3", "fgsn.train.iterations=20", "fgsn.train.val_interval=20",
        "fgsn.train.val_max_pairs=4", "fgsn.train.log_interval=10", "fgsn.train.save_interval=10",
        "fgsn.model.num_classes=8", "localizer={ransac: {num_iterations: 500}}"]


def test_demo_end_to_end(tmp_path):
    conf = merge_config(demo.default_conf, overrides=TINY)
    out = tmp_path / "demo"
    result = demo.main(conf, out)
    assert result["baseline"]["method"] == "p3p"
    assert set(result["methods"]) == {"ssmc", "gsmc", "pfsl"}
    for method, rows in result["methods"].items():
        ev = rows["fgsn-k8"]["eval"]
        assert ev["all"]["num_queries"] == 8 and set(ev["conditions"]) == {"dusk", "night"}
        assert len(list((out / "fgsn-k8" / method / "figures").rglob("*.png"))) == 2
    # the generated street is easy: P3P-RANSAC localizes every dusk query within (5 m, 10 deg)
    assert result["baseline"]["eval"]["conditions"]["dusk"]["recall"][2] == 100.0
    assert (out / "fgsn" / "checkpoints" / "best.pt").is_file()
    assert "| fgsn-k8 | 8 |" in (out / "table.md").read_text()
    pfsl = [json.loads(line) for line in (out / "fgsn-k8" / "pfsl" / "results.jsonl").read_text().splitlines()]
    assert len(pfsl) == 8
    again = demo.main(conf, out)
    assert again["methods"]["gsmc"]["fgsn-k8"]["eval"] == result["methods"]["gsmc"]["fgsn-k8"]["eval"]
