"""The command-line tools as importable modules, one per command: ``parse_args(argv)`` and ``main(argv)``.

``blazekit <command>`` (:mod:`blazekit.cli`) and the ``tools/<command>.py`` scripts both call them. Each module
imports only argparse and :mod:`blazekit.config` at the top, so ``--help`` answers without importing torch; the
heavy imports happen inside ``main`` once the arguments are known to be valid.
"""
