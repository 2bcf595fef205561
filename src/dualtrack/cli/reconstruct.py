"""``dualtrack reconstruct SWEEP.h5``: compound a scan into a NRRD volume that 3D Slicer opens."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dualtrack.cli._common import add_device_argument
from dualtrack.reconstruction.compounding import VolumeTooLargeError
from dualtrack.reconstruction.pipeline import ReconstructionOptions, reconstruct_file
from dualtrack.utils import UsageError

DESCRIPTION = """\
Reconstruct a 3D volume from one TUS-REC scan file (frames (N, H, W) uint8) and its poses:
either a trajectory file written by `dualtrack predict` (--poses TRAJ.h5|TRAJ.csv) or the
tracker ground truth stored with the scan (--ground-truth, needs calib_matrix.csv).

Every pixel is placed in 3D with its frame's pose and splatted into a regular grid (nearest
voxel or trilinear), overlapping contributions are averaged (or the maximum kept), and small
gaps between frames are filled. The output is a NRRD with spacing, origin and direction in
Slicer's RAS world (frame 0 appears in the coronal view as on the scanner); drag it into
3D Slicer. --sequence also writes the frames with their poses as a PLUS sequence metafile
(.seq.mha) for playback in Slicer (needs the SlicerIGSIO/SlicerIGT extensions).
See docs/reconstruction.md for the coordinate conventions.

Example:
  dualtrack reconstruct data/frames_transfs/000/LH_Par_C_DtP.h5 --ground-truth -o gt.nrrd
  dualtrack reconstruct scan.h5 --poses pred.h5 -o pred.nrrd --spacing 0.5 --device cuda
"""


def register(sub) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="compound a scan with predicted or true poses into a NRRD volume for 3D Slicer",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scan", metavar="SWEEP.h5", type=Path, help="TUS-REC scan file with a 'frames' dataset")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--poses", metavar="TRAJ", type=Path, help="trajectory .h5/.csv (dualtrack predict)")
    src.add_argument(
        "--ground-truth", action="store_true", help="use the scan's tracker transforms (tforms) as poses"
    )
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.nrrd", help="output volume")
    p.add_argument(
        "--calib", type=Path, metavar="CSV",
        help="calib_matrix.csv (default: searched next to the scan and up to 3 folders above)",
    )
    p.add_argument("--spacing", type=float, default=0.5, metavar="MM", help="voxel size in mm (default 0.5)")
    p.add_argument(
        "--method", choices=("nearest", "trilinear"), default="nearest",
        help="pixel splatting: nearest voxel (fast, default) or trilinear into 8 voxels (smoother)",
    )
    p.add_argument(
        "--compound", choices=("mean", "max"), default="mean",
        help="where frames overlap: mean (default) or maximum intensity",
    )
    p.add_argument(
        "--frame", choices=("first", "obb"), default="first",
        help="grid axes: those of the first frame (default) or a tight PCA-oriented box (smaller volumes "
        "for rotating sweeps)",
    )
    p.add_argument("--no-fill", action="store_true", help="do not fill gaps between frames")
    p.add_argument("--pixel-step", type=int, default=1, metavar="K", help="use every K-th pixel (speed)")
    p.add_argument("--uint8", action="store_true", help="store uint8 voxels instead of float32 (4x smaller)")
    p.add_argument("--space", choices=("RAS", "LPS"), default="RAS", help="NRRD world space (default RAS)")
    add_device_argument(p)
    p.add_argument(
        "--max-gb", type=float, default=4.0, metavar="GB",
        help="refuse grids whose estimated memory exceeds GB (default 4; the error suggests a spacing)",
    )
    p.add_argument("--sequence", type=Path, metavar="OUT.seq.mha", help="also write a Slicer sequence")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = ReconstructionOptions(
        spacing_mm=args.spacing,
        method=args.method,
        compound=args.compound,
        fill_holes=not args.no_fill,
        frame=args.frame,
        device=args.device,
        memory_limit_gb=args.max_gb,
        pixel_step=args.pixel_step,
        out_dtype="uint8" if args.uint8 else "float32",
    )
    if not args.max_gb > 0 or args.max_gb == float("inf"):
        raise UsageError(f"--max-gb must be a positive number of gigabytes, got {args.max_gb}")
    if not args.spacing > 0 or args.spacing == float("inf"):
        raise UsageError(f"--spacing must be a positive voxel size in mm, got {args.spacing}")
    start = time.perf_counter()
    try:
        volume = reconstruct_file(
            args.scan,
            args.output,
            poses_path=args.poses,
            ground_truth=args.ground_truth,
            calib_path=args.calib,
            options=options,
            space=args.space,
            sequence_output=args.sequence,
            overwrite=args.overwrite,
            progress=True,
        )
    except VolumeTooLargeError as exc:
        raise MemoryError(  # the same advice in this command's flags
            f"{exc.what}; use --spacing {exc.suggested_spacing:.2f} or coarser, raise --max-gb, or try "
            "--frame obb (a tighter box for rotating sweeps)"
        ) from None
    ni, nj, nk = volume.shape_ijk
    covered = float((volume.weight > 0).mean()) if volume.weight is not None else float("nan")
    print(
        f"Wrote {args.output}: {ni}x{nj}x{nk} voxels of {args.spacing:g} mm, "
        f"{100 * covered:.1f}% of the grid hit by pixels, {time.perf_counter() - start:.1f} s"
    )
    if args.sequence is not None:
        print(f"Wrote {args.sequence} (load in 3D Slicer with SlicerIGSIO for sequence playback)")
    return 0
