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


def test_curves_show_headline_metrics_only():
    """Counts (nme/faces) and pycocotools' -1 'undefined' would flatten the 0..1 validation curves."""
    from blazekit.engine.logger import headline_metric_keys

    val = [{"type": "val", "step": 5, "epoch": 1, "coco/AP": 0.3, "coco/AP50": 0.66, "coco/APs": -1.0,
            "coco/AR10": 0.33, "nme": 0.13, "nme/faces": 9, "nme/faces_matched": 6, "fddb/wider/easy": 0.8},
           {"type": "val", "step": 9, "epoch": 2, "coco/APs": -1.0, "coco/AR": 0.4}]
    assert headline_metric_keys(val) == ["coco/AP", "coco/AP50", "coco/AR", "fddb/wider/easy", "nme"]


def test_console_lines_do_not_glue_onto_a_progress_bar():
    """Log lines go through tqdm.write: the bar is cleared first, so each message starts its own line."""
    import io
    import logging

    from tqdm import tqdm

    from blazekit.engine.logger import TqdmStreamHandler

    stream = io.StringIO()
    log = logging.getLogger("blazekit.test_tqdm_handler")
    log.propagate = False
    handler = TqdmStreamHandler(stream)
    log.addHandler(handler)
    try:
        with tqdm(total=3, file=stream, desc="epoch 1/1", ascii=True) as bar:
            bar.update(1)
            log.warning("validation: AP 0.5")
            bar.update(1)
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().replace("\r", "\n").split("\n")
    assert "validation: AP 0.5" in lines  # a line of its own, not "epoch 1/1: 33%|...validation: AP 0.5"
