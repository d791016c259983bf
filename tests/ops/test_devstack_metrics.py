"""`make run` starts every run from no metric samples, and wipes nothing but them."""

from openspark.devstack import metrics_dir_wipe


def test_metrics_dir_wipe_removes_only_prometheus_files(tmp_path):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "counter_4242.db").write_bytes(b"\0" * 16)  # a dead process's samples
    (folder / "histogram_4243.db").write_bytes(b"\0" * 16)
    (folder / "notes.txt").write_text("not ours")
    metrics_dir_wipe(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    metrics_dir_wipe(tmp_path / "new")  # made when missing
    assert (tmp_path / "new").is_dir()
