"""Registration cost: seconds per subject for Rigid and Affine, 1 and 2 ITK threads.

One synthetic subject per scale (``brainage.synth.synthesize_subject``): the demo's scale 0.25
(template at the demo grid spacing, 5 mm) and the real IXI geometry, scale 1.0 (template at
ixi.yaml's 1 mm). Each (scale, transform, threads) runs ``brainage.registration.register_subject``
in a fresh process with ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS set before ITK loads (ITK fixes
its thread count per process). The time is the call alone (imports excluded): what one
``register`` job costs, T1→PD, TOF→PD and PD→template together.

Run: .venv/bin/python benchmarks/registration.py [--quick] [--scales 0.25 1.0] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import read_config, report

SEED = 20260


def template_spacing(scale: float) -> float:
    """The grid spacing the workflow would use: ixi.yaml's for the real geometry, else the demo's."""
    name = "ixi.yaml" if scale >= 1.0 else "config.yaml"
    return float(read_config(name)["preprocessing"]["grid"]["spacing"])


def prepare(scale: float, root: Path) -> dict:
    """Synthesize one subject and the template at ``scale``; return paths and preparation times."""
    from brainage.registration import prepare_template
    from brainage.synth import plan_cohort, subject_files, synthesize_subject, usable_subjects

    row = usable_subjects(plan_cohort(12, SEED)).iloc[0].to_dict()
    start = time.perf_counter()
    synthesize_subject(row, root / "raw", root / "truth.json", scale, SEED)
    synth_s = time.perf_counter() - start
    spacing = template_spacing(scale)
    start = time.perf_counter()
    prepare_template(spacing, root / "template_T1.nii.gz", root / "template_mask.nii.gz")
    template_s = time.perf_counter() - start
    files = {scan: str(root / "raw" / p) for scan, p in subject_files(row).items()}
    return {
        "subject": row["subject"],
        "files": files,
        "root": str(root),
        "spacing": spacing,
        "synth_s": synth_s,
        "template_s": template_s,
    }


def register_once(job: dict) -> float:
    """(child process) One register_subject call; its wall seconds."""
    from brainage.registration import RegistrationOutputs, register_subject
    from brainage.vocabulary import MRA, PD, T1

    root = Path(job["root"])
    out = Path(tempfile.mkdtemp(prefix="reg_", dir=root))
    outputs = RegistrationOutputs(
        pd=out / "pd.nii.gz",
        t1=out / "t1.nii.gz",
        tof=out / "tof.nii.gz",
        mask=out / "mask.nii.gz",
        t1_transform=out / "t1.mat",
        tof_transform=out / "tof.mat",
        summary=out / "summary.json",
        template_transform=out / "template.mat",
    )
    start = time.perf_counter()
    register_subject(
        job["subject"],
        pd=Path(job["files"][PD]),
        t1=Path(job["files"][T1]),
        mra=Path(job["files"][MRA]),
        outputs=outputs,
        transform=job["transform"],
        template=(root / "template_T1.nii.gz", root / "template_mask.nii.gz"),
        threads=job["threads"],
        seed=SEED,
    )
    return time.perf_counter() - start


def in_fresh_process(job: dict) -> float:
    env = {
        **os.environ,
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(job["threads"]),
        "OMP_NUM_THREADS": str(job["threads"]),
    }
    result = subprocess.run(
        [sys.executable, __file__, "--job", json.dumps(job)], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"registration {job['transform']} failed:\n{result.stderr[-3000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="scale 0.15 (the tiny config's) only (< 1 min)")
    parser.add_argument("--scales", type=float, nargs="+", default=None, help="default 0.25 1.0")
    parser.add_argument("--repeats", type=int, default=None, help="runs per configuration (default 2, quick 1)")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        print(register_once(json.loads(args.job)))
        return
    scales = args.scales or ([0.15] if args.quick else [0.25, 1.0])
    repeats = args.repeats or (1 if args.quick else 2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_reg_") as tmp:
        for scale in scales:
            root = Path(tmp) / f"scale{scale}"
            root.mkdir()
            prepared = prepare(scale, root)
            print(
                f"scale {scale}: synthesis {prepared['synth_s']:.1f} s, template ({prepared['spacing']} mm) "
                f"{prepared['template_s']:.1f} s",
                flush=True,
            )
            for transform in ("Rigid", "Affine"):
                for threads in (1, 2):
                    job = {**prepared, "transform": transform, "threads": threads}
                    times = [in_fresh_process(job) for _ in range(repeats)]
                    rows.append(
                        {
                            "scale": scale,
                            "template_mm": prepared["spacing"],
                            "transform": transform,
                            "itk_threads": threads,
                            "runs": repeats,
                            "s_per_subject": min(times),
                            "s_mean": sum(times) / len(times),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    one = table[table["itk_threads"] == 1].set_index(["scale", "transform"])["s_per_subject"]
    table["speedup_vs_1_thread"] = [one[(r.scale, r.transform)] / r.s_per_subject for r in table.itertuples()]
    name = "registration" if args.scales is None else "registration_" + "_".join(f"{s:g}" for s in scales)
    report(
        table,
        name + ("_quick" if args.quick and args.scales is None else ""),
        "register_subject seconds per subject (min over runs)",
    )


if __name__ == "__main__":
    main()
