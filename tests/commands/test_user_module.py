"""Custom code as users live it: the README's "Your own dataset" example in a folder outside the checkout."""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path


from tests.conftest import REPO
DEMO = REPO / "blazekit" / "data" / "demo"


def readme_block(lang: str, first_line: str) -> str:
    """The README's code block that starts with ``first_line`` (the test runs what users copy)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for block in re.findall(rf"```{lang}\n(.*?)```", text, re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"README has no ```{lang} block starting with {first_line!r}")


MY_FACES = '''\
# my_faces.py -- one CSV row per face: image,x1,y1,x2,y2
import csv
from pathlib import Path

from blazekit.data import FaceDataset, FaceRecord
from blazekit.registry import DATASETS


@DATASETS.register()
class CsvFaces(FaceDataset):
    def __init__(self, csv_file, **kwargs):
        self.csv_file = Path(csv_file)
        super().__init__(**kwargs)  # calls load_records() once

    def load_records(self):
        faces = {}
        with open(self.csv_file, newline="") as f:
            for row in csv.DictReader(f):
                box = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
                faces.setdefault(row["image"], []).append(box)
        return [FaceRecord(path=self.csv_file.parent / name, boxes=boxes) for name, boxes in faces.items()]
'''

def my_yml() -> str:
    """The README's own-dataset config, as users copy it."""
    return readme_block("yaml", "_base_: [_base_/models/blazeface_front.yml, _base_/schedules/finetune_adamw.yml]")


QUIET = ["--set", "train.progress_bar=false", "train.tensorboard=false"]


def make_project(folder: Path, n_images: int = 4) -> Path:
    """my_faces.py + faces.csv (demo photos copied beside it) + my.yml, as a user would lay them out."""
    folder.mkdir(parents=True)
    (folder / "my_faces.py").write_text(MY_FACES)
    ann = json.loads((DEMO / "annotations.json").read_text())
    images = {im["id"]: im for im in ann["images"][:n_images]}
    rows = ["image,x1,y1,x2,y2"]
    for a in ann["annotations"]:
        if a["image_id"] in images:
            name = Path(images[a["image_id"]]["file_name"]).name
            shutil.copy(DEMO / images[a["image_id"]]["file_name"], folder / name)
            x, y, w, h = a["bbox"]
            rows.append(f"{name},{x},{y},{x + w},{y + h}")
    (folder / "faces.csv").write_text("\n".join(rows) + "\n")
    (folder / "my.yml").write_text(my_yml())
    return folder / "my.yml"


def _env():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # like a user's shell: only the checkout's tools/ put blazekit on the path
    return env


def test_readme_example_is_the_one_tested():
    """The README shows this module and config (the lead keeps them in sync)."""
    block = readme_block("python", "# my_faces.py")
    assert "class CsvFaces(FaceDataset)" in block and "FaceRecord(path=self.csv_file.parent / name" in block


def test_readme_dataset_trains_from_the_users_folder_with_workers(tmp_path):
    """The README example, as written (workers, validation before and after), on 4 demo photos for 3 epochs:
    the model it gives is at least as good as MediaPipe's weights it starts from (the front model's training
    defaults took coco/AP 0.660 -> 0.000 in one epoch)."""
    cfg = make_project(tmp_path / "faces_project")
    out = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), "my.yml", *QUIET, "train.epochs=3"],
                         cwd=cfg.parent, capture_output=True, text=True, timeout=600, env=_env())
    assert out.returncode == 0, out.stderr[-3000:]
    before, after = (float(v) for v in re.search(r"coco/AP before training ([\d.]+) -> after ([\d.]+)",
                                                 out.stdout + out.stderr).groups())
    assert before > 0.5 and after >= before, (before, after)
    assert (cfg.parent / "work_dirs" / "my_faces" / "last.pt").is_file()
    assert "CsvFaces" in (cfg.parent / "work_dirs" / "my_faces" / "config.yml").read_text()


def test_module_beside_the_config_is_found_from_another_cwd_and_in_spawned_workers(tmp_path):
    cfg = make_project(tmp_path / "faces_project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        import torch
        from blazekit import config
        from blazekit.data import build_dataset
        cfg = config.load({str(cfg)!r}, overrides=["data.train.dataset.csv_file={cfg.parent / 'faces.csv'}"])
        ds = build_dataset(cfg["data"]["train"]["dataset"])
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=list,
                                             multiprocessing_context="spawn")
        print("batches", [len(b) for b in loader], sorted(s["path"].rsplit("/", 1)[1] for b in loader for s in b))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, capture_output=True, text=True,
                         timeout=600, env=_env())
    assert out.returncode == 0, out.stderr[-3000:]
    assert "batches [2, 2]" in out.stdout


def test_missing_user_module_is_one_error_line(tmp_path):
    cfg = make_project(tmp_path / "p")
    (cfg.parent / "my_faces.py").unlink()
    out = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), str(cfg)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600, env=_env())
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: could not import user module 'my_faces'"), out.stderr
    assert str(cfg.parent) in out.stderr and str(tmp_path) in out.stderr
