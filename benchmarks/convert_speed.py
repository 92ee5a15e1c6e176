"""Conversion speed and memory: a 200-episode reference ``.pt`` file and an AitW TFRecord shard.

Both inputs hold the same episodes (lengths 3-7 steps, 5 on average, so 1,000 steps) made of real
1080x2280 Android screenshots (``shared/data/android-screenshots``), one screenshot file per step
as in the reference data. The ``.pt`` file also carries the reference's feature tensors
(``image_features`` 1408, ``q_rep_out`` 4096, ``q_rep_out_list`` 16x4096) and 16 candidate actions
per step; the TFRecord stores raw pixels, as AitW does.

Each conversion runs ``digiq-trl convert``'s code path in a fresh subprocess, which reports:

* ``seconds``: wall time of the conversion (convert, validate, save, move into place), imports
  excluded;
* ``cpu_seconds``: CPU time of the conversion (user + system), steadier than wall time on a busy
  machine;
* ``peak_rss_mb``: the process's peak resident set size (``VmHWM``; not ``ru_maxrss``, which on
  Linux carries over the parent's peak through ``exec``). It includes the interpreter, torch and
  datasets (``baseline_rss_mb``: the peak after imports, before converting) and the file-backed
  pages of memory-mapped Arrow files, which the kernel can drop at any time;
* ``peak_rss_increase_mb``: ``peak_rss_mb - baseline_rss_mb``, what converting adds;
* ``peak_anon_mb``: the peak of anonymous (private, non-file) memory, sampled every 20 ms;
* ``output_mb``: size of the saved dataset on disk; ``ratio``: ``peak_rss_mb / output_mb``.

Usage: ``python benchmarks/convert_speed.py [--episodes 200] [--screenshots DIR]``. Acceptance:
each conversion under 30 s and peak memory under 2x the output size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCREENSHOTS = REPO.parent / "shared" / "data" / "android-screenshots"
EPISODE_LENGTHS = (3, 4, 5, 6, 7)
CANDIDATES = 16


def _episode_actions(length: int):
    """A plausible AitW episode: taps, typing, enter, then task complete."""
    from digiq_trl.actions import ActionType, DeviceAction

    actions = [DeviceAction.tap(0.1 + 0.1 * (t % 8), 0.5) for t in range(length - 3)]
    return actions + [
        DeviceAction.type_text("wireless headphones"),
        DeviceAction.press(ActionType.PRESS_ENTER),
        DeviceAction.press(ActionType.STATUS_TASK_COMPLETE),
    ]


def _episodes(count: int) -> list[list]:
    return [_episode_actions(EPISODE_LENGTHS[i % len(EPISODE_LENGTHS)]) for i in range(count)]


def build_reference_pt(root: Path, screens: list[Path], episodes: list[list]) -> tuple[Path, Path]:
    """A reference-format ``.pt`` file and its folder of per-step screenshots (hard links)."""
    import torch

    from digiq_trl.actions import format_action

    images = root / "images"
    images.mkdir()
    trajectories, index = [], 0
    for e, actions in enumerate(episodes):
        steps = []
        for t, action in enumerate(actions):
            name = f"{e:04d}_{t}.png"
            os.link(screens[index % len(screens)], images / name)
            index += 1
            text = format_action(action, with_plan=True)
            steps.append(
                {
                    "observation": "Previous Actions: Goal: search for headphones</s>",
                    "next_observation": "Previous Actions: ... Goal: search for headphones</s>",
                    "image_path": f"/nfs/digiq/images/{name}",
                    "task": "Search for wireless headphones",
                    "image_features": torch.randn(1408),
                    "q_rep_out": torch.randn(4096),
                    "q_rep_out_list": torch.randn(CANDIDATES, 4096),
                    "action": text,
                    "action_list": "<split>".join([text] * CANDIDATES),
                    "reward": float(t == len(actions) - 1 and e % 3 == 0),
                    "done": t == len(actions) - 1,
                    "trajectory_reward": float(e % 3 == 0),
                    "mc_return": 0.0,
                    "traj_id": e,
                    "step_id": t,
                }
            )
        trajectories.append(steps)
    path = root / "general_train.pt"
    torch.save(trajectories, path)
    return path, images


def build_aitw_shard(root: Path, screens: list[Path], episodes: list[list]) -> Path:
    """A gzip TFRecord shard of AitW examples (raw RGB pixels) with the same episodes."""
    from PIL import Image

    from digiq_trl.data.aitw_tfrecord import encode_example, write_tfrecord

    pixels = [np.asarray(Image.open(s).convert("RGB")) for s in screens]

    def records():
        index = 0
        for e, actions in enumerate(episodes):
            for t, action in enumerate(actions):
                image = pixels[index % len(pixels)]
                index += 1
                yield encode_example(
                    {
                        "episode_id": [f"{e:05d}"],
                        "episode_length": [len(actions)],
                        "step_id": [t],
                        "goal_info": ["search for wireless headphones"],
                        "device_type": ["pixel_6"],
                        "current_activity": ["com.android.chrome/.Main"],
                        "image/height": [image.shape[0]],
                        "image/width": [image.shape[1]],
                        "image/channels": [3],
                        "image/encoded": [image.tobytes()],
                        "image/ui_annotations_positions": [0.1, 0.1, 0.05, 0.8] * 30,
                        "image/ui_annotations_text": ["Search"] * 30,
                        "image/ui_annotations_ui_types": ["TEXT"] * 30,
                        "results/action_type": [int(action.action_type)],
                        "results/type_action": [action.typed_text],
                        "results/yx_touch": list(action.touch_point),
                        "results/yx_lift": list(action.lift_point),
                    }
                )

    path = root / "general-00000-of-00001"
    write_tfrecord(path, records())
    return path


def _status_kb(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmHWM``, ``RssAnon``...), in kB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _peak_anon_sampler(peak: list[int], stop: threading.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], _status_kb("RssAnon"))
        stop.wait(0.02)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_one(fmt: str, inputs: list[str], images: str | None, output: str) -> None:
    """(Subprocess) convert once through the CLI's code path; print a JSON line of measurements."""
    import torch

    torch.set_num_threads(1)
    from digiq_trl.data.convert_cli import write_dataset

    baseline = _status_kb("VmHWM")
    peak_anon, stop = [0], threading.Event()
    sampler = threading.Thread(target=_peak_anon_sampler, args=(peak_anon, stop), daemon=True)
    sampler.start()
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    args = argparse.Namespace(format=fmt, input=inputs, images=images, output=output, gamma=0.95)
    write_dataset(args)
    seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - cpu_start
    stop.set()
    sampler.join()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "baseline_kb": baseline,
                "peak_kb": _status_kb("VmHWM"),
                "peak_anon_kb": peak_anon[0],
            }
        )
    )


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def measure(
    name: str,
    fmt: str,
    inputs: list[Path],
    images: Path | None,
    output: Path,
    episodes: int,
    steps: int,
) -> dict:
    """Run one conversion in a subprocess and combine its measurements with the output size."""
    command = [sys.executable, __file__, "--run-one", fmt, str(output), *map(str, inputs)]
    if images is not None:
        command += ["--images", str(images)]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
    process_seconds = time.perf_counter() - started
    child = json.loads(done.stdout.strip().splitlines()[-1])
    output_mb = _size_mb(output)
    peak, baseline = child["peak_kb"] / 1024, child["baseline_kb"] / 1024
    return {
        "benchmark": name,
        "episodes": episodes,
        "steps": steps,
        "seconds": round(child["seconds"], 2),
        "cpu_seconds": round(child["cpu_seconds"], 2),
        "process_seconds": round(process_seconds, 2),
        "peak_rss_mb": round(peak, 1),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_increase_mb": round(peak - baseline, 1),
        "peak_anon_mb": round(child["peak_anon_kb"] / 1024, 1),
        "output_mb": round(output_mb, 1),
        "ratio": round(peak / output_mb, 3),
        "ratio_increase": round((peak - baseline) / output_mb, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--screenshots", type=Path, default=DEFAULT_SCREENSHOTS)
    parser.add_argument("--run-one", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        fmt, output, *inputs = args.run_one
        run_one(fmt, inputs, args.images, output)
        return
    screens = sorted(args.screenshots.glob("*.png"))
    if not screens:
        raise SystemExit(f"no screenshots in {args.screenshots}; pass --screenshots DIR")
    episodes = _episodes(args.episodes)
    steps = sum(len(e) for e in episodes)
    with tempfile.TemporaryDirectory(prefix="digiq-convert-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        pt_path, images = build_reference_pt(root, screens, episodes)
        shard = build_aitw_shard(root, screens, episodes)
        print(
            f"built inputs in {time.perf_counter() - started:.0f} s: "
            f".pt {pt_path.stat().st_size / 2**20:.0f} MB + {len(list(images.iterdir()))} "
            f"screenshots; TFRecord {shard.stat().st_size / 2**20:.0f} MB "
            f"({steps} steps of {len(screens)} real screenshots)",
            file=sys.stderr,
        )
        results = [
            measure(
                "convert_digiq_pt",
                "digiq-pt",
                [pt_path],
                images,
                root / "out_pt",
                len(episodes),
                steps,
            ),
            measure(
                "convert_aitw_tfrecord",
                "aitw-tfrecord",
                [shard],
                None,
                root / "out_aitw",
                len(episodes),
                steps,
            ),
        ]
    for result in results:
        ok = result["seconds"] < 30 and result["ratio"] < 2
        print(
            f"{result['benchmark']}: {result['seconds']} s ({result['cpu_seconds']} s CPU), "
            f"peak RSS {result['peak_rss_mb']} MB "
            f"(+{result['peak_rss_increase_mb']} MB over the idle {result['baseline_rss_mb']} MB; "
            f"anonymous peak {result['peak_anon_mb']} MB) vs output {result['output_mb']} MB: "
            f"ratio {result['ratio']} -> {'meets' if ok else 'MISSES'} < 30 s and < 2x",
            file=sys.stderr,
        )
        print(json.dumps(result))


if __name__ == "__main__":
    main()
