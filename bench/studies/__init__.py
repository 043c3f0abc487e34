"""One-off studies behind the library's defaults: ``python -m bench.studies.<module>`` (bench/README.md)."""

from __future__ import annotations

import argparse


def study_args(doc: str, argv=None, extra=None) -> argparse.Namespace:
    """The command line the model studies share: ``--model`` (a trained tiny model dir; default the shipped model),
    ``--threads`` (torch threads, set here; default 1) and ``--smoke``; ``extra(parser)`` adds a study's own flags."""
    import torch

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a trained tiny model dir (default: the shipped model)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true")
    if extra is not None:
        extra(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args
