"""Typed, strict configuration: wrong types, out-of-range values and unknown keys fail at merge time with a
message naming the key, the value and what was expected, for the command line and for Python callers alike."""
from pathlib import Path

import numpy as np
import pytest

from fgsn.utils.config import (ConfigError, between, check_conf, list_of, merge_config, merge_defaults, one_of)
from localization.localize import build_conf

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("override, message", [
    ("localizer.ransac.num_iterations=abc", "localizer.ransac.num_iterations='abc' is invalid: expected an integer >= 1"),
    ("localizer.ransac.num_iterations=-5", "localizer.ransac.num_iterations=-5 is invalid: expected an integer >= 1"),
    ("localizer.ransac.num_iterations=1e4", "expected an integer >= 1"),  # 10000.0 is not an integer
    ("localizer.matching.ratio_threshold=1.5", "ratio_threshold=1.5 is invalid: expected a number > 0 and <= 1"),
    ("localizer.matching.index=annoy", "expected one of auto, flat, ivf, hnsw"),
    ("localizer.ransac.refine=maybe", "localizer.ransac.refine='maybe' is invalid: expected true or false"),
    ("workers=0", "workers=0 is invalid: expected an integer >= 1"),
])
def test_command_line_values_checked(override, message):
    with pytest.raises(ConfigError, match="^command line: .*" + message.replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.").replace("+", r"\+")):
        build_conf("p3p", overrides=[override])


def test_method_sections_checked():
    with pytest.raises(ConfigError, match=r"localizer\.gsmc\.mode='auto' .* full or reduced \(auto, which chose"):
        build_conf("gsmc", overrides=["localizer.gsmc.mode=auto"])
    with pytest.raises(ConfigError, match=r"localizer\.gsmc\.height_offsets_m=\['a'\] is invalid"):
        build_conf("gsmc", overrides=["localizer.gsmc.height_offsets_m=[a]"])
    with pytest.raises(ConfigError, match=r"localizer\.pfsl\.visibility\.distance_scale=\[0\.5\] is invalid: "
                                          r"expected a list of 2 of a number > 0"):
        build_conf("pfsl", overrides=["localizer.pfsl.visibility.distance_scale=[0.5]"])
    # a union: a named rule or a list of label ids
    assert list(build_conf("pfsl", overrides=["localizer.pfsl.stationary.labels=[1,2]"]).localizer.pfsl.stationary
                .labels) == [1, 2]
    assert build_conf("pfsl", overrides=["localizer.pfsl.stationary.labels=paper"]).localizer.pfsl.stationary.labels == "paper"
    with pytest.raises(ConfigError, match="stationary.labels='some' is invalid: expected one of all, paper, consistency "
                                          "or a list of an integer >= 0"):
        build_conf("pfsl", overrides=["localizer.pfsl.stationary.labels=some"])
    # a float default takes an integer; a null default takes anything
    assert build_conf("p3p", overrides=["localizer.ransac.inlier_threshold_px=4"]).localizer.ransac.inlier_threshold_px == 4
    assert build_conf("gsmc", overrides=["localizer.gsmc.max_points=500"]).localizer.gsmc.max_points == 500


def test_yaml_values_checked_and_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("localizer:\n  ransac:\n    confidence: 1.5\n")
    with pytest.raises(ConfigError, match=f"^{path} \\+ command line: localizer.ransac.confidence=1.5 is invalid"):
        build_conf("p3p", yaml_path=path, overrides=["seed=1"])


def test_python_callers_strict(tmp_path):
    """fgsn.train.main and a localizer's merged_conf reject a misspelt key and a wrong value before any work."""
    from fgsn import train
    from localization.ssmc import SSMCLocalizer

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="lrr"):
        train.main({"train": {"lrr": 0.1}}, out)
    with pytest.raises(ConfigError, match=r"train\.iterations='abc' is invalid: expected an integer >= 1"):
        train.main({"train": {"iterations": "abc"}, "data": {"root": str(tmp_path)}}, out)
    assert not out.exists()  # nothing written
    with pytest.raises(ConfigError, match=r"ssmc\.ignore_labels=\[-1\] is invalid"):
        SSMCLocalizer.merged_conf({"ssmc": {"ignore_labels": [-1]}})
    with pytest.raises(ConfigError, match="semantics.source='file' is invalid: expected one of checkpoint, labels"):
        SSMCLocalizer.merged_conf({"semantics": {"source": "file"}})


def test_ransac_function_conf_checked():
    from localization.ransac import p3p_ransac

    b = np.tile([[0.0, 0, 1]], (5, 1))
    with pytest.raises(ConfigError, match="unknown key"):
        p3p_ransac(b, b, 100.0, np.random.default_rng(0), conf={"num_iterationz": 5})
    with pytest.raises(ConfigError, match="num_iterations=0 is invalid"):
        p3p_ransac(b, b, 100.0, np.random.default_rng(0), conf={"num_iterations": 0})


def test_check_primitives():
    c = between(0, 1, lo_open=True)
    assert c(0.5) and c(1) and not c(0) and not c(True) and not c("0.5") and not c(float("nan")) and not c(None)
    assert between(1, integer=True, optional=True)(None) and not between(1, integer=True)(2.0)
    assert one_of("a", 1)("a") and not one_of(1)(True)  # True == 1 but is not the integer 1
    assert list_of(between(0), 2)([0, 1.5]) and not list_of(between(0), 2)([0]) and not list_of(between(0))("ab")
    defaults = {"a": 1, "b": {"c": "x", "d": None, "e": [1.0, 2.0]}, "free": {}}
    check_conf({"a": 2, "b": {"c": "y", "d": [1], "e": [3, 4]}, "free": {"anything": 1}}, defaults)
    with pytest.raises(ConfigError, match=r"^here: b\.c=3 is invalid: expected a string"):
        check_conf({"a": 2, "b": {"c": 3}}, defaults, source="here")
    with pytest.raises(ConfigError, match=r"b=5 is invalid: expected a section of keys \(c, d, e\)"):
        check_conf({"b": 5}, defaults)
    with pytest.raises(ConfigError, match="unknown|not in struct|Key 'z'"):
        merge_defaults(defaults, {"z": 1})


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_configs_pass(path):
    """Every configuration in configs/ passes the checks of the step it is for."""
    from evaluation import ablate
    from fgsn import pretrain, train
    from localization.apr import train as apr_train
    from reconstruction import synthetic

    rel = path.relative_to(REPO / "configs")
    if rel.parts[0] == "fgsn":
        mod = pretrain if rel.name.startswith("pretrain") else train
        merge_config(mod.default_conf, yaml_path=path, checks=mod.conf_checks)
    elif rel.parts[0] == "ablate":
        merge_config(ablate.default_conf, yaml_path=path)
    elif rel.name == "demo_long_sequence.yaml":  # a generator configuration
        merge_config(synthetic.default_conf, yaml_path=path)
    elif rel.parts[0] == "apr":
        apr_train.build_conf(path)
    else:
        pytest.fail(f"no step known for {rel}")


def test_free_form_section_takes_new_keys_from_the_command_line(tmp_path):
    """A section whose default is None (ablate's method_overrides) is free-form: a command-line override may add a
    key the YAML file did not set; sections with defaults stay strict."""
    (tmp_path / "c.yaml").write_text("free: {pfsl: {odometry: {source: gt}}}\n")
    conf = merge_config({"free": None, "fixed": {"a": 1}}, yaml_path=tmp_path / "c.yaml",
                        overrides=["free.pfsl.odometry.visual.noise=fixed"])
    assert conf.free.pfsl.odometry.source == "gt" and conf.free.pfsl.odometry.visual.noise == "fixed"
    with pytest.raises(ConfigError, match="fixed.b"):
        merge_config({"free": None, "fixed": {"a": 1}}, overrides=["fixed.b=2"])
