"""``dualtrack predict``: the trajectory of one sweep from trained weights (see :mod:`dualtrack.predict`)."""

from __future__ import annotations

import argparse

from dualtrack.cli._common import (
    add_chunk_size_argument,
    add_device_argument,
    add_precision_argument,
    check_chunk_size,
)

EPILOG = """\
outputs (in OUT):
  trajectory.h5, trajectory.csv  global[i] = T_{0<-i} (N,4,4), global[0] = I, and
                                 local[i-1] = T_{i-1<-i} (N-1,4,4): 4x4 rigid maps of column points
                                 from image mm of frame i to frame 0 (i-1), TUS-REC corner-origin
                                 image mm (pixel (u,v) 1-based column/row -> S @ (u,v,0,1))
  metrics.json                   when the scan has ground truth: paper GPE/LPE/FDR/drift (mm, %),
                                 with --tusrec-metrics also the official all-pixel TUS-REC errors

examples:
  dualtrack predict data/frames_transfs/000/LH_Par_C_DtP.h5 --weights runs/fusion -o pred/
  dualtrack predict my_frames/ --spacing 0.2 0.2 --weights weights/dualtrack -o pred/ --device cuda
  dualtrack reconstruct data/frames_transfs/000/LH_Par_C_DtP.h5 --poses pred/trajectory.h5 -o vol.nrrd
"""


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="predict the probe trajectory of one sweep with trained weights",
        description="Predict the probe trajectory of one B-mode sweep (a TUS-REC .h5 scan of either "
        "layout, a folder of PNG/.npy frames, or a .npy frame stack) with a trained model, and write "
        "the local and global poses. Scans with tracker transforms and a calibration also get metrics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scan", metavar="SWEEP",
                   help="TUS-REC .h5 scan, folder of frames, or .npy stack (N, H, W)")
    p.add_argument("--weights", required=True, metavar="RUN_OR_EXPORT",
                   help="run directory (best.pt / last.pt), .pt checkpoint, or exported folder "
                   "(model.safetensors + config.json)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (new or empty)")
    add_device_argument(p)
    p.add_argument("--calib", metavar="CSV",
                   help="calib_matrix.csv (default for .h5 scans: next to or above the scan)")
    p.add_argument("--spacing", nargs=2, type=float, metavar=("SX", "SY"),
                   help="pixel size in mm along columns and rows (needed for frame folders without --calib)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs in a non-empty OUT")
    add_chunk_size_argument(p)
    p.add_argument("--tusrec-metrics", action="store_true",
                   help="also compute the official all-pixel TUS-REC metrics (slower)")
    add_precision_argument(p)
    p.add_argument("--resample", action="store_true",
                   help="resample frames whose pixel spacing differs from the model's training spacing "
                   "(by more than 2 %%) to it; without it such frames are refused")
    p.set_defaults(func=run)


def run(args) -> int:
    from dualtrack.predict import predict_file

    check_chunk_size(args.chunk_size)
    res = predict_file(
        args.scan, args.weights, args.output, device=args.device,
        spacing=tuple(args.spacing) if args.spacing else None, calib=args.calib,
        overwrite=args.overwrite, chunk_size=args.chunk_size, tusrec_metrics=args.tusrec_metrics,
        precision=args.precision, resample=args.resample,
    )
    h, w = res.shape
    print(f"{res.scan}: {res.num_frames} frames {h}x{w}, model {res.model_name} ({res.weights})")
    print(f"prediction: {res.seconds:.2f} s ({1000 * res.seconds / res.num_frames:.1f} ms/frame)")
    for path in res.files.values():
        print(f"  wrote {path}")
    if res.metrics is not None:
        paper = res.metrics["paper"]
        print("paper metrics: " + ", ".join(
            f"{k} {_fmt(paper[k])}{' %' if k == 'FDR' else ' mm'}" for k in ("GPE", "LPE", "FDR", "max_drift")
        ))
        if "tusrec" in res.metrics:
            errors = ", ".join(f"{k} {_fmt(v)} mm" for k, v in res.metrics["tusrec"].items())
            score = _fmt(res.metrics["normalised"]["final_score"])
            print(f"TUS-REC (all pixels): {errors}; normalised final score {score}")
    else:
        print("no ground truth: no metrics")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
