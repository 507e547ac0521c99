"""Import pretrained BlazeFace weights (being split into modules by source; see the next commit)."""
from .tflite import *  # noqa: F401,F403
from .tflite import _op_name  # noqa: F401
