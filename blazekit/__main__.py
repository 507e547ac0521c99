"""``python -m blazekit <command> ...``: the same as the ``blazekit`` console command."""
import sys

from .cli import main

sys.exit(main())
