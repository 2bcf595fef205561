"""Check that an imported authors' checkpoint gives the authors' outputs in dualtrack.

Two steps in two environments (the authors' code needs torchvision and transformers, which this
package does not; their code is CC BY-NC-SA and is only *run*, never copied):

1. ``reference``, with the Python of an environment that runs the authors' repository
   (https://github.com/ImFusionGmbH/DualTrack; see docs/models.md): builds their model with random
   weights (every tensor perturbed, BatchNorm statistics included), saves its ``state_dict`` as a
   bare checkpoint, makes random uint8 sweeps of 480 x 640 frames and runs their model on them
   through their own preprocessing (``/255``, ``torchvision`` centre crop 256 for the local
   branch, full-frame ``Resize(224)`` for the global one)::

       /path/to/authors-venv/bin/python benchmarks/compare_authors.py reference \\
           --authors-src /path/to/DualTrack --frames 40 100 --out compare_out

2. ``compare``, in dualtrack's environment: ``dualtrack import-weights`` of that checkpoint, then
   ``Predictor.predict`` on the same sweeps (fp32, CPU; unchunked and with the local CNN in
   chunks), and the largest difference of the 6-DoF outputs::

       python benchmarks/compare_authors.py compare --out compare_out

It prints and writes ``compare_out/compare.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ARCHS = {"dualtrack_tusrec2024": "dualtrack_tus_rec_2024"}
SPACING = (0.229389190673828, 0.220979690551758)


def reference(args: argparse.Namespace) -> None:
    """Run in the authors' environment (see the module docstring)."""
    import torch

    # torchvision's CUDA wheels on a CPU torch leave two operator schemas undefined; declaring them
    # (no kernels) lets the pure-Python parts the authors' model uses import.
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    sys.path.insert(0, str(Path(args.authors_src).resolve()))
    import src.models.fusion_model.fusion_model  # noqa: F401  (registers their models)
    from src.models.model_registry import get_model
    from src.transform import CenterCrop, Resize

    torch.manual_seed(args.seed)
    model = get_model(name=ARCHS[args.arch], pretrained=False).eval()
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif name.endswith("running_mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
            else:
                t.add_(0.02 * torch.randn(t.shape, generator=gen))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "authors_random.pt")
    rng = np.random.default_rng(args.seed)
    results = {}
    torch.set_num_threads(args.threads)
    for n in args.frames:
        frames = rng.integers(0, 256, size=(n, 480, 640), dtype=np.uint8)
        x = torch.tensor(frames)[:, None].float() / 255.0
        local = CenterCrop((256, 256))(x)
        glob = Resize((224, 224))(x)
        t0 = time.perf_counter()
        with torch.no_grad():
            pred = model(glob[None], local[None])[0].numpy()
        results[n] = time.perf_counter() - t0
        np.save(out / f"frames_{n}.npy", frames)
        np.save(out / f"authors_{n}.npy", pred.astype(np.float64))
        print(f"{n} frames: their output {pred.shape}, |max| {np.abs(pred).max():.4f}, {results[n]:.1f} s")
    (out / "reference.json").write_text(
        json.dumps(
            {"arch": args.arch, "frames": args.frames, "seed": args.seed, "authors_seconds": results},
            indent=2,
        )
        + "\n"
    )


def compare(args: argparse.Namespace) -> None:
    """Run in dualtrack's environment (see the module docstring)."""
    import torch

    from dualtrack.inference import Predictor

    out = Path(args.out)
    ref = json.loads((out / "reference.json").read_text())
    export = out / "imported"
    subprocess.run(
        [
            "dualtrack",
            "import-weights",
            str(out / "authors_random.pt"),
            "--arch",
            ref["arch"],
            "-o",
            str(export),
            "--overwrite",
        ],
        check=True,
    )
    torch.set_num_threads(args.threads)
    rows = []
    for n in ref["frames"]:
        frames = np.load(out / f"frames_{n}.npy")
        theirs = np.load(out / f"authors_{n}.npy")
        for chunk in (None, args.chunk):
            predictor = Predictor.from_export(export, device="cpu", precision="fp32", chunk_size=chunk)
            t0 = time.perf_counter()
            ours = predictor.predict(frames, spacing=SPACING).params
            seconds = time.perf_counter() - t0
            diff = float(np.abs(ours - theirs).max())
            rows.append(
                {
                    "frames": n,
                    "chunk_size": chunk,
                    "max_abs_diff": diff,
                    "max_abs_output": float(np.abs(theirs).max()),
                    "ours_seconds": seconds,
                    "authors_seconds": ref["authors_seconds"][str(n)],
                }
            )
            print(
                f"{n} frames, chunk {chunk}: max |ours - theirs| = {diff:.2e} "
                f"(outputs up to {np.abs(theirs).max():.3f}); ours {seconds:.1f} s"
            )
    worst = max(r["max_abs_diff"] for r in rows)
    summary = {
        "arch": ref["arch"],
        "tolerance": args.tolerance,
        "max_abs_diff": worst,
        "passed": worst <= args.tolerance,
        "rows": rows,
        "torch": torch.__version__,
    }
    (out / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("arch", "max_abs_diff", "tolerance", "passed")}))
    if not summary["passed"]:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="step", required=True)
    r = sub.add_parser("reference", help="in the authors' environment: random checkpoint + their outputs")
    r.add_argument("--authors-src", required=True, help="checkout of the authors' DualTrack repository")
    r.add_argument("--arch", default="dualtrack_tusrec2024", choices=sorted(ARCHS))
    r.add_argument("--frames", type=int, nargs="+", default=[40, 100], help="sweep lengths to try")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--out", required=True)
    c = sub.add_parser("compare", help="in dualtrack's environment: import, predict, compare")
    c.add_argument("--out", required=True, help="the folder written by the reference step")
    c.add_argument("--chunk", type=int, default=48, help="local CNN chunk size of the chunked run")
    c.add_argument("--tolerance", type=float, default=1e-4)
    c.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    (reference if args.step == "reference" else compare)(args)


if __name__ == "__main__":
    main()
