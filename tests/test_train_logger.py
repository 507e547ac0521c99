"""Run logger: JSONL records, truncation on resume, curve PNG, text log."""
import json

from blazekit.engine.logger import RunLogger, read_metrics


def test_jsonl_records_truncate_and_plot(tmp_path):
    log = RunLogger(tmp_path, tensorboard=False, console=False)
    for step in range(1, 6):
        log.scalars("train", step, {"loss": 1.0 / step, "loss_cls": 0.5 / step, "lr": 0.01}, epoch=0)
    log.scalars("val", 5, {"AP50": 0.7, "AP": 0.4}, epoch=1)
    log.info("hello %s", "world")
    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert len(recs) == 6 and recs[0] == {"type": "train", "step": 1, "epoch": 0, "loss": 1.0, "loss_cls": 0.5,
                                          "lr": 0.01}
    assert recs[-1]["AP50"] == 0.7
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"type": "train", "st')  # torn line of a killed run
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 6
    log.truncate_after(3)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    png = log.plot()
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log.close()
    assert "hello world" in (tmp_path / "train.log").read_text()


def test_disabled_logger_writes_nothing(tmp_path):
    log = RunLogger(tmp_path / "rank1", enabled=False)
    log.scalars("train", 1, {"loss": 1.0})
    log.info("x")
    assert not (tmp_path / "rank1").exists()
    assert json.dumps({}) == "{}"
