"""Bad data is never used silently: truncated JPEGs, images whose every face is dropped, a readable summary."""
import logging
import shutil

import numpy as np
import pytest

from blazekit.data import DataError, FaceDataset, FaceRecord, read_image
from blazekit.data.datasets.base import jpeg_problem

from tests.conftest import REPO

DEMO = REPO / "blazekit" / "data" / "demo" / "images"


class Listed(FaceDataset):
    """A dataset from a list of (path, boxes)."""

    def __init__(self, items, **kw):
        self.items = items
        super().__init__(**kw)

    def load_records(self):
        return [FaceRecord(path=p, boxes=b) for p, b in self.items]


@pytest.fixture
def photos(tmp_path):
    good = tmp_path / "good.jpg"
    shutil.copy(DEMO / "astronaut.jpg", good)
    data = (DEMO / "grace_hopper.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])  # a download or copy that stopped half way
    return good, cut


def test_truncated_jpeg_is_detected_though_opencv_decodes_it(photos):
    import cv2

    good, cut = photos
    assert cv2.imread(str(cut)) is not None  # the silent failure this guards against
    assert jpeg_problem(good) is None
    assert "truncated" in jpeg_problem(cut)
    with pytest.raises(DataError, match=r"corrupt image .*cut\.jpg: image file is truncated"):
        read_image(cut)
    # data appended after the end-of-image marker (camera padding, motion photos) is not an error
    padded = good.with_name("padded.jpg")
    padded.write_bytes(good.read_bytes() + b"\0" * 5000)
    assert jpeg_problem(padded) is None
    np.testing.assert_array_equal(read_image(padded), read_image(good))


def test_truncated_jpeg_raises_naming_the_file_or_is_skipped_and_listed(photos, caplog):
    good, cut = photos
    box = [[10, 10, 60, 60]]
    with pytest.raises(DataError, match=r"corrupt image .*cut\.jpg \(listed by Listed\)"):
        Listed([(good, box), (cut, box)])
    with caplog.at_level(logging.WARNING, logger="blazekit.data"):
        ds = Listed([(good, box), (cut, box)], on_bad_sample="skip")
    assert any("skipped 1 missing/corrupt images" in r.getMessage() and str(cut) in r.getMessage()
               for r in caplog.records)
    assert len(ds) == 1 and ds.summary.skipped_images == 1 and ds.summary.skipped_files == [str(cut)]
    report = ds.summary.report()
    assert "images skipped as missing/corrupt (on_bad_sample: skip): 1: " + str(cut) in report


def test_image_with_every_face_outside_is_counted_and_warned(photos, caplog):
    good, _ = photos  # 512x512
    outside = good.with_name("outside.jpg")
    shutil.copy(good, outside)
    with caplog.at_level(logging.WARNING, logger="blazekit.data"):
        ds = Listed([(good, [[10, 10, 60, 60]]), (outside, [[600, 600, 700, 700], [-90, 5, -10, 50]])])
    s = ds.summary
    assert (len(ds), s.faces, s.dropped_zero_area, s.images_all_dropped) == (2, 1, 2, 1)
    assert s.all_dropped_files == [str(outside)]
    assert "1 images with every face dropped" in str(s)
    assert f"images with every face dropped (used as images without faces): 1: {outside}" in s.report()
    assert any("every box was dropped" in r.getMessage() and str(outside) in r.getMessage() for r in caplog.records)


def test_report_is_one_readable_block_and_adds_up_over_concat(photos):
    from blazekit.data import ConcatDataset

    good, cut = photos
    a = Listed([(good, [[10, 10, 60, 60], [500, 5, 600, 50]])])
    b = Listed([(good, [[5, 5, 50, 50]]), (cut, [[5, 5, 50, 50]])], on_bad_sample="skip")
    cat = ConcatDataset([a, b])
    lines = cat.summary.report().splitlines()
    assert lines[0] == "dataset ConcatDataset: 2 images, 3 faces (0 ignored as small or invalid)"
    assert lines[1] == "  boxes clipped to the image: 1"
    assert lines[2] == "  boxes dropped: 0 zero-area or outside the image, 0 inverted (x2 < x1 or y2 < y1)"
    assert lines[3].endswith(f"on_bad_sample: skip): 1: {cut}")
