"""``superlevel landscape``: the level-set demo on synthetic landscapes.

Bad arguments end in a usage error (exit status 2) before anything is computed: a
``--resolution`` above :data:`MAX_RESOLUTION` (the grid holds ``resolution**2`` points),
an ``--out`` that is a folder, has a format matplotlib cannot write, or lies where
nothing can be created. ``--out FILE`` without a suffix writes ``FILE.png`` and says so.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from superlevel.landscape.demo import DEMO_FUNCTIONS, OPTIMIZERS, _known_names

MAX_RESOLUTION = 2001  # a 2001 x 2001 grid: 4 M points, about 32 MB per float64 array


def _optimizer_list(text: str) -> list[str]:
    # Repeats pass here: run_demo rejects them with its own message.
    try:
        return _known_names(text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _resolution(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_RESOLUTION:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_RESOLUTION} (the grid has resolution**2 points), got {value}"
        )
    return value


def _figure_path(text: str) -> Path:
    """``--out``: the file the figure goes to (``.png`` added when there is no suffix),
    refused when it cannot be written."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a folder; give a file name, e.g. {str(path / 'landscape.png')!r}"
        )
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        raise argparse.ArgumentTypeError(
            f"{text!r}: matplotlib cannot write {path.suffix!r} files; use .png "
            f"(or one of {', '.join(sorted(formats))})"
        )
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # created when saving
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        why = "is not a folder" if not folder.is_dir() else "is not writable"
        raise argparse.ArgumentTypeError(f"cannot write {str(path)!r}: {str(folder)!r} {why}")
    return path


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {value}")
    return value


def _point(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _run_demo(args: argparse.Namespace) -> int:
    from superlevel.landscape.demo import format_report, plot_demo, run_demo

    try:
        result = run_demo(
            args.function,
            args.optimizers,
            steps=args.steps,
            lr=args.lr,
            decay=args.decay,
            seed=args.seed,
            start=args.start,
            resolution=args.resolution,
        )
    except ValueError as exc:
        args.parser.error(str(exc))
    print(format_report(result))
    if args.out:
        try:
            plot_demo(result, args.out)
        except OSError as exc:  # checked up front, but the disk may still refuse
            print(f"error: cannot write figure {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"figure: {args.out}")
    return 0


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``landscape`` (with its ``demo`` sub-command) on the top-level parser."""
    parser = subparsers.add_parser(
        "landscape",
        help="level-set tools on synthetic landscapes",
        description="Level-set connectivity of optimizer trajectories on synthetic landscapes.",
    )
    sub = parser.add_subparsers(dest="landscape_command", metavar="SUBCOMMAND")
    sub.required = True
    demo = sub.add_parser(
        "demo",
        help="GD at a large step vs SuperLevelSGD: barrier jumps and component switches",
        description=(
            "Run the optimizers from one seeded start on a landscape with disconnected "
            "sub-level components; print per optimizer the steps that jumped a barrier, "
            "the component switches and the final loss; optionally draw the trajectories."
        ),
    )
    demo.add_argument("--function", choices=sorted(DEMO_FUNCTIONS), default="himmelblau")
    demo.add_argument(
        "--optimizers",
        type=_optimizer_list,
        default=["gd", "superlevel"],
        help=f"comma-separated, from {','.join(OPTIMIZERS)} (default gd,superlevel)",
    )
    demo.add_argument("--steps", type=_positive_int, default=100)
    demo.add_argument(
        "--lr",
        default=None,
        help="one lr for all, or name=lr,... (default: GD unstable at every minimum; "
        "superlevel 0.5 on himmelblau, 1.0 on multiwell; adam 0.1)",
    )
    demo.add_argument(
        "--decay",
        type=_non_negative_float,
        default=0.02,
        help="beta of SuperLevelSGD's exp(-beta t) (default 0.02)",
    )
    demo.add_argument("--seed", type=int, default=0, help="seeds the start point")
    demo.add_argument("--start", type=_point, default=None, help="explicit start 'x,y'")
    demo.add_argument(
        "--resolution",
        type=_resolution,
        default=301,
        help=f"grid points per axis for the components, at most {MAX_RESOLUTION} (default 301)",
    )
    demo.add_argument(
        "--out",
        type=_figure_path,
        default=None,
        help="write the figure to this file (PNG; .png is added when it has no suffix)",
    )
    demo.set_defaults(func=_run_demo, parser=demo)
