"""Wall time and peak memory of the streaming NVM reader against the old whole-file reader, on a synthetic model.

    python benchmarks/bench_nvm.py [--points 5000000] [--reference-points 500000] [--cameras 1000]
        [--tmp DIR] [--seed 0]

Writes synthetic NVM_V3 files with RobotCar-like tracks (``--cameras`` cameras, 4-10 observations per point,
random positions, colours and measurements written like RobotCar Seasons' ``all.nvm``) to a temporary folder:
one of ``--reference-points`` points, where the old reader still fits in memory, and one of ``--points``
points. Each reader runs in a fresh child process, which reports its wall time and its peak resident memory
(``ru_maxrss``) above the memory after its imports. Readers:

- ``read_nvm_arrays``: the streaming parse into arrays alone;
- ``read_nvm``: the streaming parse and the ``pycolmap.Reconstruction`` built from it;
- ``old read_nvm`` (reference, reference size only): the reader before streaming, kept below.

On the reference file both ``read_nvm`` give a digest of the whole reconstruction (images, poses, keypoints,
point ids, positions, colours, tracks); the table says whether they are equal. Prints the ratios streaming / old
measured in the same run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")

from reconstruction.camera import Camera  # noqa: E402
from reconstruction.geometry import pose_from_qvec_center  # noqa: E402
from reconstruction.nvm import _key, read_nvm, read_nvm_arrays  # noqa: E402
from reconstruction.records import DatasetError  # noqa: E402

CAMERA = Camera("PINHOLE", 1024, 1024, (400.0, 400.0, 512.0, 512.0))  # RobotCar Seasons: f = 400, 1024x1024


# ---- REFERENCE ONLY: the NVM reader as it was before streaming (reconstruction/nvm.py at 71ef5a8), kept here to
# ---- measure against. It tokenises the whole file into Python lists. Not used anywhere else.
def _old_tokens(path: Path):
    if not path.is_file():
        raise DatasetError(f"{path}: NVM model file not found")
    with open(path) as f:
        lines = [(i, ln.split()) for i, ln in enumerate(f, 1)]
    return [(i, t) for i, t in lines if t]


def _old_parse_cameras(path: Path):
    lines = _old_tokens(path)
    if not lines or lines[0][1][0] != "NVM_V3":
        raise DatasetError(f"{path}: not an NVM_V3 file (first line must be 'NVM_V3')")
    k = 1
    try:
        n_cams = int(lines[k][1][0])
    except (IndexError, ValueError):
        raise DatasetError(f"{path}:{lines[k][0] if k < len(lines) else '?'}: expected the number of cameras") from None
    cams = []
    for lineno, t in lines[k + 1 : k + 1 + n_cams]:
        if len(t) < 9:
            raise DatasetError(f"{path}:{lineno}: camera line needs 'name f qw qx qy qz cx cy cz ...'")
        try:
            vals = np.array([float(v) for v in t[1:9]])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: non-numeric camera values") from None
        cams.append((t[0], vals[0], pose_from_qvec_center(vals[1:5], vals[5:8])))
    if len(cams) != n_cams:
        raise DatasetError(f"{path}: header announces {n_cams} cameras, file has {len(cams)}")
    return lines, k + 1 + n_cams, cams


def old_read_nvm(path, camera_of):
    """REFERENCE ONLY: the pre-streaming ``reconstruction.nvm.read_nvm``, unchanged."""
    import pycolmap

    path = Path(path)
    lines, k, cams = _old_parse_cameras(path)
    rec = pycolmap.Reconstruction()
    cam_ids: dict[Camera, int] = {}
    image_sizes = []
    obs_per_image: list[list[tuple[float, float]]] = [[] for _ in cams]
    for i, (name, _, pose) in enumerate(cams):
        img_name, camera = camera_of(_key(name))
        if camera not in cam_ids:
            cid = len(cam_ids) + 1
            rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=cid, model=camera.model, width=camera.width,
                                                            height=camera.height, params=list(camera.params)))
            cam_ids[camera] = cid
        image_sizes.append((camera.width, camera.height, cam_ids[camera], img_name, pose))
    try:
        n_pts = int(lines[k][1][0]) if k < len(lines) else 0
    except ValueError:
        raise DatasetError(f"{path}:{lines[k][0]}: expected the number of points") from None
    points = []
    for lineno, t in lines[k + 1 : k + 1 + n_pts]:
        try:
            xyz = np.array([float(v) for v in t[:3]])
            rgb = np.array([int(float(v)) for v in t[3:6]], dtype=np.uint8)
            n = int(t[6])
            meas = np.array([float(v) for v in t[7 : 7 + 4 * n]]).reshape(n, 4)
        except (ValueError, IndexError):
            raise DatasetError(f"{path}:{lineno}: malformed point line") from None
        track = []
        for img_idx, _, mx, my in meas:
            img_idx = int(img_idx)
            if not 0 <= img_idx < len(cams):
                raise DatasetError(f"{path}:{lineno}: point observed in unknown image index {img_idx}")
            w, h = image_sizes[img_idx][:2]
            track.append((img_idx, len(obs_per_image[img_idx])))
            obs_per_image[img_idx].append((mx + w / 2, my + h / 2))
        points.append((xyz, rgb, track))
    if len(points) != n_pts:
        raise DatasetError(f"{path}: header announces {n_pts} points, file has {len(points)}")
    for i, (w, h, cid, img_name, pose) in enumerate(image_sizes):
        kp = np.array(obs_per_image[i], dtype=np.float64).reshape(-1, 2)
        image = pycolmap.Image(name=img_name, keypoints=kp, camera_id=cid, image_id=i + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pose))
    for xyz, rgb, track in points:
        tr = pycolmap.Track()
        for img_idx, p2d in track:
            tr.add_element(img_idx + 1, p2d)
        rec.add_point3D(xyz, tr, rgb)
    return rec
# ---- end of the reference reader


def write_synthetic_nvm(path: Path, n_points: int, n_cameras: int, seed: int, chunk: int = 200_000) -> None:
    """Write an NVM_V3 file of ``n_points`` points observed 4-10 times each by ``n_cameras`` random cameras."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write(f"NVM_V3\n\n{n_cameras}\n")
        q = rng.normal(size=(n_cameras, 4))
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        c = rng.uniform(-500, 500, size=(n_cameras, 3))
        for i in range(n_cameras):
            f.write(f"./overcast-reference/rear/{1418000000000000 + i}.png 400 " + " ".join(f"{v:.9f}" for v in q[i])
                    + " " + " ".join(f"{v:.9f}" for v in c[i]) + " 0 0\n")
        f.write(f"\n{n_points}\n")
        for p0 in range(0, n_points, chunk):
            p = min(chunk, n_points - p0)
            n = rng.integers(4, 11, size=p)
            xyz = rng.uniform(-500, 500, size=(p, 3))
            rgb = rng.integers(0, 256, size=(p, 3))
            lines = []
            for k in np.unique(n):  # one format per track length; the line order is kept
                rows = np.flatnonzero(n == k)
                img = rng.integers(0, n_cameras, size=(len(rows), k))
                feat = rng.integers(0, 20000, size=(len(rows), k))
                mxy = rng.uniform(-512, 512, size=(len(rows), k, 2))
                obs = np.concatenate([img[..., None], feat[..., None], mxy], axis=2).reshape(len(rows), 4 * k)
                table = np.concatenate([xyz[rows], rgb[rows], np.full((len(rows), 1), k), obs], axis=1)
                fmt = "%.9f %.9f %.9f %d %d %d %d" + " %d %d %.3f %.3f" * k
                lines += [(r, fmt % tuple(v)) for r, v in zip(rows.tolist(), table.tolist())]
            lines.sort(key=lambda x: x[0])
            f.write("\n".join(s for _, s in lines) + "\n")
        f.write("\n0\n")


def _digest(rec) -> str:
    """SHA-1 of a reconstruction's images (name, camera, pose, keypoints, point ids) and points (id, xyz, colour,
    track), in id order."""
    h = hashlib.sha1()
    for iid in sorted(rec.images):
        im = rec.images[iid]
        h.update(f"{iid} {im.name} {im.camera_id}".encode())
        h.update(np.asarray(im.cam_from_world().matrix()).tobytes())
        h.update(np.array([p.xy for p in im.points2D]).tobytes())
        h.update(np.array([p.point3D_id if p.has_point3D() else -1 for p in im.points2D]).tobytes())
    for pid in sorted(rec.points3D):
        p = rec.points3D[pid]
        h.update(np.int64(pid).tobytes() + np.asarray(p.xyz).tobytes() + np.asarray(p.color).tobytes())
        h.update(np.array([(e.image_id, e.point2D_idx) for e in p.track.elements]).tobytes())
    return h.hexdigest()


def _child(reader: str, path: Path, digest: bool) -> None:
    """Run one reader in this process and print JSON: seconds, peak and baseline resident memory (MB)."""
    import pycolmap  # noqa: F401  (imported before the baseline, like numpy)

    base_mb = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    camera_of = lambda key: (f"{key}.jpg", CAMERA)  # noqa: E731
    t0 = time.perf_counter()
    if reader == "read_nvm_arrays":
        out = read_nvm_arrays(path)
        size = (len(out.xyz), len(out.image_idx))
    else:
        out = (read_nvm if reader == "read_nvm" else old_read_nvm)(path, camera_of)
        size = (out.num_points3D(), sum(p.track.length() for p in out.points3D.values()) if digest else -1)
    dt = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    res = {"s": dt, "peak_mb": peak_mb, "base_mb": base_mb, "points": size[0], "obs": size[1]}
    if digest and reader != "read_nvm_arrays":
        res["digest"] = _digest(out)
    print(json.dumps(res))


def _measure(reader: str, path: Path, digest: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", reader, str(path)] + (["--digest"] if digest else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=5_000_000)
    parser.add_argument("--reference-points", type=int, default=500_000,
                        help="size of the file read by the old reader as well (it must fit in memory)")
    parser.add_argument("--cameras", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the synthetic files (default: a temporary one)")
    parser.add_argument("--child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--digest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]), args.digest)
        return

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        rows = []
        for n_points, readers in ((args.reference_points, ("read_nvm_arrays", "read_nvm", "old read_nvm")),
                                  (args.points, ("read_nvm_arrays", "read_nvm"))):
            path = Path(tmp) / f"synthetic-{n_points}.nvm"
            t0 = time.perf_counter()
            write_synthetic_nvm(path, n_points, args.cameras, args.seed)
            mb = path.stat().st_size / 2**20
            print(f"wrote {path.name}: {mb:.0f} MB in {time.perf_counter() - t0:.0f} s", flush=True)
            for reader in readers:
                r = _measure(reader, path, digest=n_points == args.reference_points)
                rows.append((n_points, mb, reader, r))
                print(f"  {reader}: {r}", flush=True)
            path.unlink()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| points | file MB | reader | wall time | peak RSS MB | above imports MB | observations | digest |")
    print("|---|---|---|---|---|---|---|---|")
    for n_points, mb, reader, r in rows:
        if "error" in r:
            print(f"| {n_points:,} | {mb:.0f} | {reader} | failed: {r['error']} | | | | |")
            continue
        print(f"| {n_points:,} | {mb:.0f} | {reader} | {r['s']:.1f} s | {r['peak_mb']:.0f} | "
              f"{r['peak_mb'] - r['base_mb']:.0f} | {r['obs'] if r['obs'] >= 0 else '-'} | "
              f"{r.get('digest', '-')[:12]} |")
    ref = {reader: r for n, _, reader, r in rows if n == args.reference_points and "error" not in r}
    if "old read_nvm" in ref and "read_nvm" in ref:
        old, new = ref["old read_nvm"], ref["read_nvm"]
        print(f"\nat {args.reference_points:,} points, streaming read_nvm / old read_nvm: time "
              f"{new['s'] / old['s']:.2f}, peak memory above imports "
              f"{(new['peak_mb'] - new['base_mb']) / (old['peak_mb'] - old['base_mb']):.2f}; "
              f"identical reconstructions: {new.get('digest') == old.get('digest')}")


if __name__ == "__main__":
    main()
