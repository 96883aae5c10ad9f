"""Tests of xtc/study/versions.py: the package versions each run recorded."""


def test_write_versions_records_each_distinct_run_version_set(tmp_path):
    import json as _json

    from xtc.study import write_versions

    for i, torch_v in enumerate(["2.13.0", "2.13.0", "2.14.0"]):
        d = tmp_path / "runs" / f"r{i}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(_json.dumps({"versions": {"torch": torch_v}}))
    out = write_versions(str(tmp_path / "runs"), str(tmp_path / "versions.json"))
    assert out["runs_recorded"] == [{"torch": "2.13.0"}, {"torch": "2.14.0"}]
    assert _json.load(open(tmp_path / "versions.json"))["aggregated_with"]["python"]
