"""`model-tools synth`: render synthetic training folders and/or a ground-truth drive bag.

Runs without ROS: ``PYTHONPATH=src/model_tools python -m model_tools.cli synth ...``
needs only numpy, cv2, yaml (and tqdm for the progress bar); ``--bag`` also
needs rosbags. Camera flags with two values (LO HI) draw a camera per frame
(folders) or per drive (bag) from that range.
"""

from __future__ import annotations

import argparse
import time

from model_tools.data.synth import CameraRanges, CameraRig, CameraSource
from model_tools.io_utils import check_output_folder
from perception_core.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="root folder for <out>/<split>/{rgb,depth,label}/NNNNNN.png + camera.yaml")
    parser.add_argument("--bag", help="also (or only) write a rosbag2 (mcap) drive to this folder")
    parser.add_argument("--frames", type=int, default=100, help="frames in total (folders) or in the bag (default 100)")
    parser.add_argument("--width", type=int, default=1280, help="image width (default 1280, the vehicle camera)")
    parser.add_argument("--height", type=int, default=1080, help="image height (default 1080)")
    ranges = CameraRanges()
    parser.add_argument("--hfov", type=float, nargs="+", default=list(ranges.hfov_deg), metavar="DEG",
                        help="horizontal field of view in degrees: one value, or LO HI to draw per frame "
                             f"(per drive for --bag); default {ranges.hfov_deg[0]:g} {ranges.hfov_deg[1]:g}")
    parser.add_argument("--mount-height", type=float, nargs="+", default=list(ranges.mount_height), metavar="M",
                        help="camera height above ground in metres, one value or LO HI; "
                             f"default {ranges.mount_height[0]:g} {ranges.mount_height[1]:g}")
    parser.add_argument("--pitch", type=float, nargs="+", default=list(ranges.pitch_deg), metavar="DEG",
                        help=f"camera pitch down in degrees, one value or LO HI; default {ranges.pitch_deg[0]:g} {ranges.pitch_deg[1]:g}")
    parser.add_argument("--roll", type=float, nargs="+", default=list(ranges.roll_deg), metavar="DEG",
                        help=f"camera roll in degrees, one value or LO HI; default {ranges.roll_deg[0]:g} {ranges.roll_deg[1]:g}")
    parser.add_argument("--seed", type=int, default=0, help="master seed; same seed => identical bytes")
    parser.add_argument("--split", choices=("train", "val", "test"), default=None,
                        help="write all --frames into this split (default train)")
    parser.add_argument("--val-fraction", type=float, default=0.0, help="share of --frames written to val/ (instead of --split)")
    parser.add_argument("--test-fraction", type=float, default=0.0, help="share of --frames written to test/")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering in parallel (default 1)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop each folder split after this long, keeping the frames done (camera.yaml says how many)")
    parser.add_argument("--flat", action="store_true", help="obstacle-free flat ground and sky only (geometry tests)")
    parser.add_argument("--drive-share", type=float, default=0.0, metavar="F",
                        help="share of folder frames taken as a drive bag has them: a clear-corridor scene with a "
                             "ditch or drop-off beside the road, the vehicle somewhere on the drive (default 0)")
    parser.add_argument("--fps", type=float, default=10.0, help="bag frame rate (default 10)")
    parser.add_argument("--speed", type=float, default=4.0, help="bag vehicle speed in m/s (default 4)")
    parser.add_argument("--ontology", default=None, help="ontology YAML (default: the one shipped with perception_core)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing frames / bag")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def split_counts(frames: int, split: str | None, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Frames per split: all into --split, or divided by the fractions (train gets the rest)."""
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ConfigError(f"--val-fraction {val_fraction} and --test-fraction {test_fraction} must be in [0, 1) and sum below 1")
    if split is not None and (val_fraction or test_fraction):
        raise ConfigError("give either --split or --val-fraction/--test-fraction, not both")
    if split is not None or not (val_fraction or test_fraction):
        return {split or "train": frames}
    n_val = round(frames * val_fraction)
    n_test = round(frames * test_fraction)
    return {name: n for name, n in (("train", frames - n_val - n_test), ("val", n_val), ("test", n_test)) if n > 0}


def camera_source(args: argparse.Namespace) -> CameraSource:
    """A fixed CameraRig when every camera flag has one value, else CameraRanges to draw from."""
    spans = {}
    for flag, name in (("--hfov", "hfov"), ("--mount-height", "mount_height"), ("--pitch", "pitch"), ("--roll", "roll")):
        values = getattr(args, name)
        if len(values) not in (1, 2):
            raise ConfigError(f"{flag} takes one value or two (LO HI), got {len(values)}")
        spans[name] = (values[0], values[-1])
    ranges = CameraRanges(args.width, args.height, hfov_deg=spans["hfov"], mount_height=spans["mount_height"],
                          pitch_deg=spans["pitch"], roll_deg=spans["roll"])
    if all(lo == hi for lo, hi in spans.values()):
        return CameraRig.default(args.width, args.height, hfov_deg=spans["hfov"][0], mount_height=spans["mount_height"][0],
                                 pitch_deg=spans["pitch"][0], roll_deg=spans["roll"][0])
    return ranges


def run(args: argparse.Namespace) -> int:
    from model_tools.data.synth import write_synthetic_folder
    from model_tools.data.synth_bag import write_drive_bag

    if not args.out and not args.bag:
        raise ConfigError("give --out (folders) and/or --bag (rosbag2)")
    if args.frames < 1 or args.width < 8 or args.height < 8 or args.workers < 1:
        raise ConfigError("--frames and --workers must be >= 1, --width/--height >= 8")
    if not 0.0 <= args.drive_share <= 1.0:
        raise ConfigError(f"--drive-share must be in [0, 1], got {args.drive_share}")
    if args.out:
        check_output_folder(args.out, "--out")
    if args.bag:
        check_output_folder(args.bag, "--bag")
    rig = camera_source(args)
    progress = not args.no_progress
    if args.out:
        for split, n in split_counts(args.frames, args.split, args.val_fraction, args.test_fraction).items():
            start = time.perf_counter()
            folder = write_synthetic_folder(args.out, rig, n, args.seed, split, workers=args.workers, flat=args.flat,
                                            overwrite=args.overwrite, ontology_path=args.ontology, progress=progress,
                                            max_seconds=args.max_seconds, drive_share=args.drive_share)
            elapsed = time.perf_counter() - start
            done = len(list((folder / "rgb").glob("*.png")))
            print(f"wrote {done} frames to {folder} in {elapsed:.1f} s ({done / max(elapsed, 1e-9):.1f} frames/s)")
    if args.bag:
        start = time.perf_counter()
        bag = write_drive_bag(args.bag, rig, args.frames, args.fps, args.seed, speed=args.speed, workers=args.workers,
                              flat=args.flat, overwrite=args.overwrite, ontology_path=args.ontology, progress=progress)
        print(f"wrote {args.frames}-frame drive bag {bag} in {time.perf_counter() - start:.1f} s")
    return 0
